from __future__ import annotations

import threading

import pytest

from framebroker.core import Bus


def test_topics_and_prefix_patterns() -> None:
    bus = Bus()
    exact = bus.subscribe("session/a/result")
    prefix = bus.subscribe("session/a/*")
    everything = bus.subscribe("*")
    bus.publish("session/a/result", 1)
    bus.publish("session/b/result", 2)
    assert [m.payload for m in exact.drain()] == [1]
    assert [m.payload for m in prefix.drain()] == [1]
    assert [m.payload for m in everything.drain()] == [1, 2]


def test_a_slow_subscriber_loses_oldest_and_others_are_untouched() -> None:
    bus = Bus()
    slow = bus.subscribe("t", maxlen=3)
    fast = bus.subscribe("t", maxlen=100)
    for i in range(10):
        bus.publish("t", i)
        if i % 2:
            fast.drain()
    assert [m.payload for m in slow.drain()] == [7, 8, 9]
    assert slow.dropped == 7
    assert fast.dropped == 0


def test_messages_a_subscriber_must_keep_are_never_dropped_for_room() -> None:
    bus = Bus()
    sub = bus.subscribe("t", maxlen=3, keep=lambda m: m.payload % 5 == 0)
    for i in range(1, 13):
        bus.publish("t", i)
    # 5 and 10 stay however full the mailbox gets; the oldest others make room.
    assert [m.payload for m in sub.drain()] == [5, 10, 12]
    assert sub.dropped == 9
    for i in (15, 20, 25, 30):  # only messages to keep: the mailbox grows past maxlen
        bus.publish("t", i)
    assert [m.payload for m in sub.drain()] == [15, 20, 25, 30]


def test_wake_is_called_after_queueing() -> None:
    bus = Bus()
    seen: list[int] = []
    sub = bus.subscribe("t", wake=lambda: seen.append(len(sub)))
    bus.publish("t", "x")
    assert seen == [1]


def test_unsubscribe_and_has_subscribers() -> None:
    bus = Bus()
    sub = bus.subscribe("a/*")
    assert bus.has_subscribers("a/1")
    assert not bus.has_subscribers("b")
    sub.close()
    assert bus.publish("a/1", 0) == 0
    assert bus.subscriber_count == 0


def test_publishing_from_threads() -> None:
    bus = Bus()
    sub = bus.subscribe("t", maxlen=10_000)

    def work() -> None:
        for i in range(500):
            bus.publish("t", i)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sub.drain()) == 4000


def test_maxlen_validated() -> None:
    with pytest.raises(ValueError, match="default_maxlen"):
        Bus(0)
