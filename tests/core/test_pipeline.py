from __future__ import annotations

import pytest

from framebroker.core import Frame, Pipeline, ProcessContext, Rate

from .helpers import Boom, Counter, Echo

CTX = ProcessContext(session_id="s")


def frame(i: int, ts: float | None = None) -> Frame:
    f = Frame(meta={} if ts is None else {"timestamp": ts})
    f.index = i
    return f


def test_outputs_merge_in_order_later_keys_win() -> None:
    p = Pipeline([Echo("a", {"x": 1, "a": 1}), Echo("b", {"x": 2, "b": 2})])
    r = p.run(frame(0), CTX)
    assert r.outputs == {"x": 2, "a": 1, "b": 2}
    assert list(r.timings) == ["a", "b"]
    assert all(t >= 0 for t in r.timings.values())
    assert r.ran == ["a", "b"]


def test_a_raising_processor_is_reported_and_the_rest_go_on() -> None:
    after = Echo("after")
    p = Pipeline([Boom(), after])
    r1 = p.run(frame(0), CTX)
    r2 = p.run(frame(1), CTX)
    assert r1.errors == [{"processor": "boom", "error": "RuntimeError: bad frame 0"}]
    assert r2.errors[0]["error"] == "RuntimeError: bad frame 1"
    assert after.calls == [0, 1]
    assert r1.outputs == {"after": True}


def test_every_n_frames() -> None:
    slow = Echo("slow", rate=Rate(every=3))
    p = Pipeline([slow, Echo("fast")])
    ran = [p.run(frame(i), CTX).ran for i in range(7)]
    assert slow.calls == [0, 3, 6]
    assert ran[1] == ["fast"]


def test_interval_follows_the_frame_clock() -> None:
    proc = Echo("periodic", rate=Rate(interval=1.0))
    p = Pipeline([proc])
    # 10 frames 0.25 s apart on the frame's own clock, delivered instantly.
    for i in range(10):
        p.run(frame(i, ts=100.0 + 0.25 * i), CTX)
    assert proc.calls == [0, 4, 8]


def test_setup_once() -> None:
    e = Echo()
    p = Pipeline([e])
    for i in range(3):
        p.run(frame(i), CTX)
    assert e.setups == 1


def test_end_merges_and_reports_failures() -> None:
    p = Pipeline([Counter(), Boom()])
    p.run(frame(0), CTX)
    results, errors = p.end(CTX)
    assert results == {"total": 1}
    assert errors == [{"processor": "boom", "error": "RuntimeError: bad end"}]


def test_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="repeated"):
        Pipeline([Echo("a"), Echo("a")])


def test_rate_validation() -> None:
    with pytest.raises(ValueError, match="every must be >= 1"):
        Rate(every=0)
    with pytest.raises(ValueError, match="interval"):
        Rate(interval=-1)


def test_snapshot_restore_by_name() -> None:
    a = Pipeline([Counter()])
    for i in range(4):
        a.run(frame(i), CTX)
    b = Pipeline([Counter()])
    b.restore(a.snapshot())
    assert b.run(frame(4), CTX).outputs == {"seen": 5}
    with pytest.raises(ValueError, match="not in this pipeline"):
        b.restore({"other": {}})


def test_later_processors_see_earlier_outputs() -> None:
    class Reader(Echo):
        def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, object] | None:
            return {"saw": dict(frame.results)}

    r = Pipeline([Echo("a", {"x": 1}), Reader("reader")]).run(frame(0), CTX)
    assert r.outputs["saw"] == {"x": 1}
