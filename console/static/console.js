// The console works without this file. It does one thing: where a page was asked to refresh itself
// (an element with data-refresh="SECONDS", present only when the URL says refresh=1), reload it every
// so many seconds, and never while its tab is hidden: a console left open in a background tab costs the
// database nothing.
(function () {
  "use strict";
  var marker = document.querySelector("[data-refresh]");
  if (!marker) return;
  var seconds = Math.max(5, parseInt(marker.getAttribute("data-refresh"), 10) || 10);
  var timer = null;
  function schedule() {
    clearTimeout(timer);
    if (document.visibilityState === "visible") {
      timer = setTimeout(function () { window.location.reload(); }, seconds * 1000);
    }
  }
  document.addEventListener("visibilitychange", schedule);
  schedule();
})();
