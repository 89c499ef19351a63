"""The one bounded mailbox: what may be dropped is bounded, what must arrive is kept."""

from __future__ import annotations

import pytest

from framebroker.core.mailbox import Mailbox


def test_in_arrival_order_the_oldest_droppable_goes_for_room() -> None:
    box: Mailbox[int] = Mailbox(3)
    for i in range(1, 7):
        box.put(i, keep=i == 2)
    assert box.dropped == 3
    assert box.drain() == [2, 5, 6]  # 2 was kept; the oldest others went, in order


def test_kept_first_sends_control_ahead_of_queued_frames() -> None:
    box: Mailbox[str] = Mailbox(2, kept_first=True)
    for item, keep in (("f1", False), ("f2", False), ("stats", True), ("f3", False)):
        box.put(item, keep=keep)
    # Two messages at most: the stats took the oldest frame's room, f3 the next one's.
    assert box.drain() == ["stats", "f3"]
    assert box.dropped == 2


def test_kept_messages_are_bounded_only_by_max_kept() -> None:
    box: Mailbox[int] = Mailbox(1, max_kept=3)
    for i in range(5):
        box.put(i, keep=True)
    assert len(box) == 3
    assert box.dropped == 2
    assert box.drain() == [2, 3, 4]


def test_wake_is_called_after_each_put_and_bounds_are_checked() -> None:
    woken: list[int] = []
    box: Mailbox[int] = Mailbox(4, wake=lambda: woken.append(len(box)))
    box.put(1)
    box.put(2, keep=True)
    assert woken == [1, 2]
    assert box.take() == 1
    box.clear()
    assert box.take() is None
    with pytest.raises(ValueError, match="bounds must be >= 1"):
        Mailbox(0)
