"""`summaries`, the command line: it parses and formats; what it does lives in shared/ (the operator
actions, the owners of the tables) or, for commands of its own (imports, sync, seed, up), here."""
