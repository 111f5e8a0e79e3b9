"""Feedback summaries: their statuses and allowed moves (status.py), their one writer
(lifecycle.py), their timeline (events.py) and their JSON (representation.py)."""
