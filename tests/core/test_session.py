from __future__ import annotations

import pytest

from framebroker.core import Frame, Pipeline, Session

from .helpers import Boom, Counter, Echo


def test_frames_are_numbered_and_counted() -> None:
    s = Session("s1", Pipeline([Echo("e"), Boom()]))
    results = [s.process(Frame()) for _ in range(3)]
    assert [r.frame.index for r in results] == [0, 1, 2]
    assert s.stats.frames_in == 3
    assert s.stats.frames_processed == 3
    assert s.stats.frame_errors == 3
    assert set(s.stats.mean_latency_ms()) == {"e", "boom"}
    s.count_dropped(2)
    assert s.stats.frames_dropped == 2
    assert s.stats.frames_in == 5


def test_end_runs_once_and_summarises() -> None:
    s = Session("s2", Pipeline([Counter()]), transport="test")
    s.process(Frame())
    summary = s.end("done")
    assert summary.results == {"total": 1}
    assert summary.reason == "done"
    assert summary.pipeline == ["counter"]
    assert summary.to_dict()["stats"]["frames_processed"] == 1
    with pytest.raises(RuntimeError, match="already ended"):
        s.end()
    with pytest.raises(RuntimeError, match="has ended"):
        s.process(Frame())


def test_snapshot_resumes_numbering_and_state() -> None:
    a = Session("s3", Pipeline([Counter()]))
    for _ in range(5):
        a.process(Frame())
    b = Session("s3", Pipeline([Counter()]))
    b.restore(a.snapshot())
    r = b.process(Frame())
    assert r.frame.index == 5
    assert r.outputs == {"seen": 6}


def test_snapshot_keeps_processors_switched_off() -> None:
    a = Session("s5", Pipeline([Echo("e"), Counter()]))
    a.pipeline.disable("counter")
    state = a.snapshot()
    assert state["disabled"] == ["counter"]
    b = Session("s5", Pipeline([Echo("e"), Counter()]))
    b.restore(state)
    assert b.process(Frame()).skipped == {"counter": "disabled"}
    # A snapshot from before switches existed keeps the pipeline's own.
    c = Session("s5", Pipeline([Echo("e"), Counter()], disabled=["e"]))
    c.restore({"next_index": 3, "processors": {"counter": {"seen": 3}}})
    assert c.pipeline.disabled == {"e"}


def test_idle_clock() -> None:
    now = [10.0]
    s = Session("s4", Pipeline([]), clock=lambda: now[0])
    now[0] = 15.0
    assert s.info()["idle_s"] == 5.0
    s.process(Frame())
    assert s.last_active == 15.0
