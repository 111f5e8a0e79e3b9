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


def can_transition(current: SummaryStatus, target: SummaryStatus) -> bool:
    return target in TRANSITIONS[current]
