"""Files .ci/run is run on by tests/test_ci.py; never collected by the suite itself."""
