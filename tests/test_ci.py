""".ci/run, as CI runs it (on one sample file, tests/ci_samples/skips.py): a skip whose reason is on
.ci/allowed-skips passes; any other skip fails the run, naming the test and its reason."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.slow
SAMPLE = "tests/ci_samples/skips.py"


def ci_run(reason: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTEST_ADDOPTS", "PYTEST_ARGS")}
    env.update(PYTEST_ARGS=f"{SAMPLE} -p no:cacheprovider", CI_SAMPLE_SKIP_REASON=reason)
    return subprocess.run(["bash", ".ci/run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_an_allowed_skip_passes():
    result = ci_run("PgBouncer needs PostgreSQL on TCP (TEST_DATABASE_URL)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "skipped: 1 test(s), 0 not on .ci/allowed-skips" in result.stdout


def test_an_unexpected_skip_fails_the_run_naming_it():
    result = ci_run("pgbouncer is not installed: apt-get install pgbouncer (Debian)")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout  # pytest itself passed: the check failed the run
    assert ("UNEXPECTED tests.ci_samples.skips::test_that_is_skipped: pgbouncer is not installed: "
            "apt-get install pgbouncer (Debian)") in result.stdout
    assert "a skipped test must run here" in result.stderr
