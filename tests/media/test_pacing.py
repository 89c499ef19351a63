"""Reconnection backoff and the forward-only timeline (``media/pacing.py``)."""

from __future__ import annotations

import pytest

from framebroker.media.pacing import Backoff, Timeline


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    b = Backoff(0.5, 30)
    assert [b.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    b.reset()
    assert b.next_delay() == 0.5


def test_timestamps_never_go_back() -> None:
    timeline = Timeline()
    timeline.new_segment(0.0)
    # A camera clock that jumps back, a frame with no timestamp, then a new connection.
    stamps = [timeline.stamp(raw, 0.1) for raw in (0.0, 0.1, 0.2, 0.05, 0.15, None)]
    timeline.new_segment(None)
    stamps += [timeline.stamp(raw, 0.1) for raw in (7.0, 7.1)]
    assert stamps == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
