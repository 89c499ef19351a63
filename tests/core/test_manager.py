from __future__ import annotations

from collections.abc import Sequence

import pytest

from framebroker.core import Pipeline, SessionManager
from framebroker.core.manager import ClientSessions, ProcessorSpec, SessionPolicy
from framebroker.errors import (
    CapacityExceeded,
    ClientSessionLimit,
    FrameRateExceeded,
    InvalidInput,
    SessionConflict,
    SessionNotFound,
)

from .helpers import Echo


def factory(specs: Sequence[ProcessorSpec] | None) -> Pipeline:
    return Pipeline([Echo(str(s)) for s in (specs or ["echo"])])


def make(**policy: object) -> tuple[SessionManager, list[float]]:
    now = [0.0]
    return SessionManager(factory, SessionPolicy(**policy), clock=lambda: now[0]), now  # type: ignore[arg-type]


def test_server_made_ids_are_long_random_and_unique() -> None:
    m, _ = make()
    ids = {m.create().id for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 22 for i in ids)


def test_cap_on_sessions() -> None:
    m, _ = make(max_sessions=2)
    m.create()
    m.create()
    with pytest.raises(CapacityExceeded, match="limit is 2"):
        m.create()


def test_named_ids_are_checked() -> None:
    m, _ = make()
    m.create(session_id="72d6be50")
    with pytest.raises(SessionConflict):
        m.create(session_id="72d6be50")
    for bad in ["", "a b", "../etc", "x" * 129, "id\x00"]:
        with pytest.raises(InvalidInput):
            m.create(session_id=bad)


def test_allow_list() -> None:
    m, _ = make(allowed_ids=frozenset({"ok"}))
    assert m.create(session_id="ok").id == "ok"
    with pytest.raises(SessionNotFound):
        m.create(session_id="nope")


def test_attach_creates_then_returns_the_same() -> None:
    m, _ = make()
    a = m.attach("cam-1", pipeline=["x"])
    b = m.attach("cam-1")
    assert a is b
    assert a.pipeline.names == ["x"]
    assert len(m) == 1


def test_remove_and_get() -> None:
    m, _ = make()
    s = m.create()
    assert m.get(s.id) is s
    assert m.remove(s.id) is s
    with pytest.raises(SessionNotFound):
        m.get(s.id)
    with pytest.raises(SessionNotFound):
        m.remove(s.id)


def test_idle_sessions_oldest_first_and_busy_spared() -> None:
    m, now = make(idle_timeout_s=10)
    a = m.create()
    now[0] = 5
    b = m.create()
    c = m.create()
    now[0] = 12
    assert m.idle() == [a.id]
    now[0] = 20
    assert m.idle() == [a.id, b.id, c.id]
    assert m.idle(busy={b.id}) == [a.id, c.id]
    c.touch()
    assert c.id not in m.idle()


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        SessionPolicy(max_sessions=0)
    with pytest.raises(ValueError, match="idle_timeout_s"):
        SessionPolicy(idle_timeout_s=0)


def test_each_client_holds_at_most_its_share_and_others_are_unaffected() -> None:
    m, _ = make(max_sessions_per_client=2)
    a1 = m.create(client="10.0.0.1")
    m.create(client="10.0.0.1")
    with pytest.raises(ClientSessionLimit, match=r"10\.0\.0\.1 already holds 2 sessions") as info:
        m.create(client="10.0.0.1")
    assert info.value.to_dict()["limit"] == "max_sessions_per_client"
    assert info.value.http_status == 429
    assert len(m) == 2  # the refused one was not kept
    m.create(client="10.0.0.2")  # another client
    for _ in range(5):
        m.create()  # the server's own sessions are not counted
    assert m.clients.held("10.0.0.1") == 2
    m.remove(a1.id)  # an ended session frees its slot
    assert m.clients.held("10.0.0.1") == 1
    m.create(client="10.0.0.1")


def test_attaching_takes_no_slot_and_a_refused_id_keeps_none() -> None:
    m, _ = make(max_sessions_per_client=1)
    s = m.attach("cam-1", client="10.0.0.1")
    assert s.client == "10.0.0.1"
    assert m.attach("cam-1", client="10.0.0.2") is s  # stays its creator's
    assert m.clients.held("10.0.0.2") == 0
    with pytest.raises(SessionConflict):
        m.create(session_id="cam-1", client="10.0.0.2")
    assert m.clients.held("10.0.0.2") == 0
    m.create(client="10.0.0.2")
    with pytest.raises(ClientSessionLimit):
        m.attach("cam-2", client="10.0.0.1")
    m.remove(s.id)
    m.remove(m.attach("cam-2", client="10.0.0.1").id)
    assert len(m.clients) == 1  # only 10.0.0.2 holds a session: the map is pruned


def test_no_limit_per_client_by_default() -> None:
    m, _ = make()
    for _ in range(50):
        m.create(client="10.0.0.1")
    assert m.clients.held("10.0.0.1") == 50


def test_client_sessions_get_the_frame_rate_and_the_servers_own_do_not() -> None:
    m, _ = make(max_fps_per_session=2)
    mine = m.create(client="10.0.0.1")
    own = m.create()
    for t in (0.0, 0.1):
        mine.admit(t)
    with pytest.raises(FrameRateExceeded):
        mine.admit(0.2)
    assert mine.stats.frames_dropped == 1
    assert mine.stats.frames_in == 1  # the refused frame, counted in and dropped
    mine.admit(0.7)  # half a second later: one frame's worth again
    for _ in range(100):
        own.admit(0.0)
    assert own.rate is None
    assert own.stats.frames_dropped == 0


def test_client_limit_validation() -> None:
    with pytest.raises(ValueError, match="max_sessions_per_client"):
        SessionPolicy(max_sessions_per_client=-1)
    with pytest.raises(ValueError, match="max_fps_per_session"):
        SessionPolicy(max_fps_per_session=-1)
    with pytest.raises(ValueError, match="limit"):
        ClientSessions(-1)
