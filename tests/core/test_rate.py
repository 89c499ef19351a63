from __future__ import annotations

import pytest

from framebroker.core import FrameRate
from framebroker.errors import FrameRateExceeded


def test_a_burst_of_one_second_then_the_rate() -> None:
    rate = FrameRate(10)
    assert [rate.take(0.0) for _ in range(10)] == [0.0] * 10
    wait = rate.take(0.0)
    assert wait == pytest.approx(0.1)
    # Refused frames cost nothing: after the wait it told, one frame passes, then none.
    assert rate.take(0.1) == 0.0
    assert rate.take(0.1) > 0


def test_a_steady_client_at_the_rate_is_never_refused() -> None:
    rate = FrameRate(30)
    assert all(rate.take(i / 30) == 0.0 for i in range(300))
    faster = FrameRate(30)
    refused = sum(faster.take(i / 60) > 0 for i in range(600))  # 60 fps for 10 s
    assert 260 <= refused <= 300  # about half, less the first second's burst


def test_idle_time_refills_no_more_than_the_burst() -> None:
    rate = FrameRate(5, burst=2)
    assert rate.take(0.0) == rate.take(0.0) == 0.0
    assert rate.take(0.0) > 0
    assert [rate.take(100.0) > 0 for _ in range(3)] == [False, False, True]


def test_a_clock_stepped_back_refills_nothing_and_carries_on() -> None:
    rate = FrameRate(1, burst=1)
    assert rate.take(1000.0) == 0.0
    assert rate.take(10.0) == pytest.approx(1.0)  # earlier time: no refill, no error
    assert rate.take(11.0) == 0.0  # and the bucket carries on from the new time


def test_admit_names_the_session_and_the_limit() -> None:
    rate = FrameRate(1)
    rate.admit(0.0, "cam-1")
    with pytest.raises(FrameRateExceeded, match="session cam-1 sends more than 1 frames") as info:
        rate.admit(0.5, "cam-1")
    body = info.value.to_dict()
    assert body["code"] == "frame_rate_exceeded"
    assert body["limit"] == "max_fps_per_session"
    assert body["retry_after_s"] == pytest.approx(0.5)
    assert info.value.http_status == 429


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
def test_bad_rates_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="fps must be"):
        FrameRate(bad)
    with pytest.raises(ValueError, match="burst must be"):
        FrameRate(1, burst=bad)
