"""What operators see and do, for every front end (the CLI now, the console next): views.py
gathers the system's state from PostgreSQL and Redis; actions.py acts on it, each action returning
what it did (never printing) and recording who acted."""
