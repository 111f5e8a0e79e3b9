"""The tests: real PostgreSQL and Redis (conftest.py), shared fixtures and helpers (support.py),
real processes (processes.py); one module per part they specify."""
