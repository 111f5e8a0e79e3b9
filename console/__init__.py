"""The operators' console: a web front end beside the CLI (its own process, the Procfile's `console`),
server-rendered from PostgreSQL and Redis, acting through shared/operator/ as the CLI does. It imports
only shared/ (tests/test_layout.py)."""
