"""A callback delivery's state: stored by value, with every allowed move in one table."""

from __future__ import annotations

import enum


class DeliveryState(str, enum.Enum):
    PENDING = "pending"  # an attempt is due now or at next_attempt_at
    DELIVERED = "delivered"
    FAILED = "failed"  # a final answer, or the attempt budget used up


# pending -> pending is a retry scheduled (or an attempt postponed); delivered or failed -> pending
# is an operator's redelivery of the same event, or a new event replacing the old one when a summary
# an operator retried finishes again (deliveries.add): the only ways out of a final state.
TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.PENDING: frozenset({DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.FAILED}),
    DeliveryState.DELIVERED: frozenset({DeliveryState.PENDING}),
    DeliveryState.FAILED: frozenset({DeliveryState.PENDING}),
}


def can_transition(current: DeliveryState, target: DeliveryState) -> bool:
    return target in TRANSITIONS[current]
