"""docs/alerts.yml: every metric its rules use is one the service exports, and promtool (Debian's
prometheus package, which .ci/run installs) accepts the file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.support import debian_program, needs_debian_program

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "alerts.yml"


def test_every_alert_uses_an_exported_metric():
    exported = set(re.findall(r'"(cfs_[a-z_]+)"', (ROOT / "shared" / "platform" / "metrics.py").read_text()))
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    assert len(rules) >= 6
    for rule in rules:
        used = set(re.findall(r"\b(cfs_[a-z_]+)", rule["expr"]))
        assert used, rule["alert"]
        # A counter's samples carry a _total suffix that prometheus_client adds to the declared name.
        assert {name.removesuffix("_total") for name in used} <= {n.removesuffix("_total") for n in exported}, \
            (rule["alert"], used - exported)


@needs_debian_program("promtool")
def test_promtool_accepts_the_rules():
    result = subprocess.run([debian_program("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
