"""What at least two of api/, worker/, cli/ (and the console) use, grouped by what it owns: accounts,
summaries, callbacks, calls, the operator's views and actions, and the platform (settings, database,
Redis, logs, metrics). Each table with a lifecycle has one writer here (docs/architecture.md)."""
