"""`summaries up`'s restarts of a child that died: at once, unless it keeps dying; then with a pause
that doubles (the up process itself: tests/test_up.py)."""

from __future__ import annotations


def test_summaries_up_restarts_a_dead_child_at_once_then_with_a_doubling_pause():
    from cli.up import RESTART_MAX_S, Restarts

    now = [1000.0]
    restarts = Restarts(clock=lambda: now[0])
    assert restarts.due("worker")  # first death: at once
    waits = []
    for _ in range(7):  # keeps dying right after each start
        now[0] += 0.5
        began = now[0]
        while not restarts.due("worker"):
            now[0] += 0.25
        waits.append(now[0] - began)
    assert waits[:5] == [1.0, 2.0, 4.0, 8.0, 16.0] and waits[-1] == RESTART_MAX_S
    now[0] += 120  # ran fine for two minutes, then died: at once again
    assert restarts.due("worker") and restarts.due("web")
