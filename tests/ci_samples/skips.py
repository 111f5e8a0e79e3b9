"""Not collected by the suite (no test_ prefix): tests/test_ci.py runs .ci/run on this file alone,
with CI_SAMPLE_SKIP_REASON naming the reason its second test is skipped for."""

import os

import pytest


def test_that_runs():
    pass


def test_that_is_skipped():
    pytest.skip(os.environ["CI_SAMPLE_SKIP_REASON"])
