"""A summary's status: stored by value, with every allowed transition in one table."""

from __future__ import annotations

import enum


class SummaryStatus(str, enum.Enum):
    QUEUED = "queued"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"


# queued -> in-progress -> completed | failed; nothing else (SPEC, Lifecycle).
# Re-claiming an in-progress summary whose lease expired is a change of owner, not of status.
TRANSITIONS: dict[SummaryStatus, frozenset[SummaryStatus]] = {
    SummaryStatus.QUEUED: frozenset({SummaryStatus.IN_PROGRESS}),
    SummaryStatus.IN_PROGRESS: frozenset({SummaryStatus.COMPLETED, SummaryStatus.FAILED}),
    SummaryStatus.COMPLETED: frozenset(),
    SummaryStatus.FAILED: frozenset(),
}


# What only an operator may do (`summaries retry`, the console): put a failed summary back in the
# queue. Never by itself (SPEC: no other transitions happen by themselves), so apart from the table.
OPERATOR_TRANSITIONS: dict[SummaryStatus, frozenset[SummaryStatus]] = {
    SummaryStatus.FAILED: frozenset({SummaryStatus.QUEUED}),
}


def can_transition(current: SummaryStatus, target: SummaryStatus, by_operator: bool = False) -> bool:
    return target in TRANSITIONS[current] or (by_operator and target in OPERATOR_TRANSITIONS.get(current, ()))
