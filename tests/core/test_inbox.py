from __future__ import annotations

import pytest

from framebroker.core.inbox import Backpressure, Inbox
from framebroker.errors import CapacityExceeded


def test_wait_keeps_everything_in_order_and_refuses_past_capacity() -> None:
    box: Inbox[int] = Inbox(Backpressure.WAIT, capacity=3)
    for i in range(3):
        assert box.offer(i) == []
    with pytest.raises(CapacityExceeded, match="limit is 3"):
        box.offer(3)
    assert [box.take(), box.take(), box.take(), box.take()] == [0, 1, 2, None]
    assert box.dropped == 0


def test_latest_keeps_newest_and_counts_drops() -> None:
    box: Inbox[int] = Inbox(Backpressure.LATEST, capacity=1)
    assert box.offer(1) == []
    assert box.offer(2) == [1]
    assert box.offer(3) == [2]
    assert box.take() == 3
    assert box.take() is None
    assert box.dropped == 2


def test_latest_with_deeper_capacity() -> None:
    box: Inbox[int] = Inbox(Backpressure.LATEST, capacity=2)
    for i in range(5):
        box.offer(i)
    assert box.clear() == [3, 4]
    assert box.dropped == 3


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        Inbox(Backpressure.WAIT, capacity=0)
