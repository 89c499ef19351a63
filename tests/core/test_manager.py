from __future__ import annotations

from collections.abc import Sequence

import pytest

from framebroker.core import Pipeline, SessionManager
from framebroker.core.manager import ProcessorSpec, SessionPolicy
from framebroker.errors import CapacityExceeded, InvalidInput, SessionConflict, SessionNotFound

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
