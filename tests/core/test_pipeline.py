from __future__ import annotations

from typing import Any

import pytest

from framebroker.core import Frame, Pipeline, ProcessContext, Processor, Rate

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
    results = [p.run(frame(i), CTX) for i in range(7)]
    assert slow.calls == [0, 3, 6]
    assert results[1].ran == ["fast"]
    assert results[1].skipped == {"slow": "not_due"}
    assert results[3].ran == ["slow", "fast"]
    assert results[3].skipped == {}


def test_every_counts_the_pipelines_frames_not_their_index() -> None:
    # A library user who runs frames straight through a pipeline leaves index at -1.
    slow = Echo("slow", rate=Rate(every=2))
    p = Pipeline([slow])
    ran = [bool(p.run(Frame(), CTX).ran) for _ in range(5)]
    assert ran == [True, False, True, False, True]


def test_interval_follows_the_frame_clock() -> None:
    proc = Echo("periodic", rate=Rate(interval=1.0))
    p = Pipeline([proc])
    # 10 frames 0.25 s apart on the frame's own clock, delivered instantly.
    for i in range(10):
        p.run(frame(i, ts=100.0 + 0.25 * i), CTX)
    assert proc.calls == [0, 4, 8]


def test_interval_keeps_its_average_rate_when_frames_miss_the_grid() -> None:
    # 25 fps and a 0.3 s interval: no frame lands on most due times. Scheduling from the
    # last run would drift to one run per 0.32 s; the grid keeps one run per 0.3 s.
    proc = Echo("periodic", rate=Rate(interval=0.3))
    p = Pipeline([proc])
    for i in range(250):  # 10 s of video
        p.run(frame(i, ts=1_556_855_549.3732016 + i / 25), CTX)
    assert len(proc.calls) == 34  # due at 0, 0.3, ..., 9.9
    gaps = {b - a for a, b in zip(proc.calls, proc.calls[1:], strict=False)}
    assert gaps <= {7, 8}


def test_interval_survives_the_rounding_of_epoch_timestamps() -> None:
    # 10 fps with a 0.1 s interval must run on every frame; epoch-sized floats round the
    # differences below 0.1, which skipped every other frame without a tolerance.
    proc = Echo("periodic", rate=Rate(interval=0.1))
    p = Pipeline([proc])
    for i in range(50):
        p.run(frame(i, ts=1_556_855_549.3732016 + i * 0.1), CTX)
    assert proc.calls == list(range(50))


def test_a_replay_faster_than_realtime_behaves_as_live() -> None:
    runs = []
    for speedup in (1.0, 1000.0):  # 10 s of 30 fps video, live and replayed 1000x faster
        proc = Echo("periodic", rate=Rate(interval=1.0))
        p = Pipeline([proc])
        for i in range(300):
            f = frame(i, ts=100.0 + i / 30)
            f.received_at = 5000.0 + i / 30 / speedup  # wall clock plays no part
            p.run(f, CTX)
        runs.append(proc.calls)
    assert runs[0] == runs[1] == list(range(0, 300, 30))


def test_without_a_timestamp_the_interval_follows_arrival() -> None:
    proc = Echo("periodic", rate=Rate(interval=1.0))
    p = Pipeline([proc])
    for i in range(6):
        f = frame(i)
        f.received_at = 50.0 + 0.5 * i
        p.run(f, CTX)
    assert proc.calls == [0, 2, 4]


def test_a_gap_does_not_cause_catch_up_runs() -> None:
    proc = Echo("periodic", rate=Rate(interval=1.0))
    p = Pipeline([proc])
    for i, ts in enumerate([0.0, 0.5, 10.2, 10.4, 10.9, 11.2, 12.3]):
        p.run(frame(i, ts=ts), CTX)
    # 10.2 runs and starts a new grid: due again at 11.2, then 12.2.
    assert proc.calls == [0, 2, 5, 6]


def test_a_clock_that_goes_back_makes_the_processor_due_at_once() -> None:
    proc = Echo("periodic", rate=Rate(interval=5.0))
    p = Pipeline([proc])
    for i, ts in enumerate([1000.0, 1001.0, 3.0, 4.0, 8.0]):
        p.run(frame(i, ts=ts), CTX)
    assert proc.calls == [0, 2, 4]


def test_every_and_interval_both_must_hold() -> None:
    proc = Echo("both", rate=Rate(every=2, interval=1.0))
    p = Pipeline([proc])
    for i in range(8):
        p.run(frame(i, ts=0.5 * i), CTX)
    assert proc.calls == [0, 2, 4, 6]
    proc2 = Echo("both", rate=Rate(every=3, interval=1.0))
    p2 = Pipeline([proc2])
    for i in range(8):
        p2.run(frame(i, ts=0.25 * i), CTX)
    assert proc2.calls == [0, 4]  # frame 3 is the 3rd but only 0.75 s on


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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "every must be an integer >= 1, got 0"),
        ({"every": 2.0}, "every must be an integer >= 1, got 2.0"),
        ({"every": True}, "every must be an integer >= 1, got True"),
        ({"interval": -1}, "interval must be a finite number >= 0, got -1"),
        ({"interval": float("nan")}, "interval must be a finite number >= 0, got nan"),
        ({"interval": "1"}, "interval must be a finite number >= 0, got '1'"),
    ],
)
def test_rate_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rate(**kwargs)


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


class Gate(Processor):
    """Switches ``target`` off on frames whose meta says ``menu``, and on again otherwise."""

    name = "gate"

    def __init__(self, target: str) -> None:
        self.target = target

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        if frame.meta.get("menu"):
            ctx.disable(self.target)
        else:
            ctx.enable(self.target)
        return {"gate_sees": ctx.is_enabled(self.target)}


def menu_frame(i: int, menu: bool) -> Frame:
    f = Frame(meta={"menu": menu})
    f.index = i
    return f


def test_a_switch_applies_to_later_processors_on_the_same_frame() -> None:
    hud = Echo("hud")
    p = Pipeline([Gate("hud"), hud])
    r0 = p.run(menu_frame(0, False), CTX)
    r1 = p.run(menu_frame(1, True), CTX)
    r2 = p.run(menu_frame(2, True), CTX)
    r3 = p.run(menu_frame(3, False), CTX)
    assert hud.calls == [0, 3]
    assert (r0.ran, r0.skipped) == (["gate", "hud"], {})
    assert (r1.ran, r1.skipped) == (["gate"], {"hud": "disabled"})
    assert r2.skipped == {"hud": "disabled"}
    assert r3.ran == ["gate", "hud"]
    assert r1.outputs["gate_sees"] is False
    assert p.disabled == frozenset()


def test_a_switch_applies_to_earlier_processors_from_the_next_frame() -> None:
    hud = Echo("hud")
    p = Pipeline([hud, Gate("hud")])
    p.run(menu_frame(0, True), CTX)  # hud already ran on this frame
    r1 = p.run(menu_frame(1, False), CTX)  # off here, switched on again after it
    p.run(menu_frame(2, False), CTX)
    assert hud.calls == [0, 2]
    assert r1.skipped == {"hud": "disabled"}


def test_disabled_wins_over_not_due_and_keeps_the_rate_clock() -> None:
    hud = Echo("hud", rate=Rate(every=4))
    p = Pipeline([Gate("hud"), hud])
    menu = [False, True, True, False, False, False, False, False, False]
    results = [p.run(menu_frame(i, m), CTX) for i, m in enumerate(menu)]
    assert results[1].skipped == {"hud": "disabled"}  # off, and not due either
    assert results[3].skipped == {"hud": "not_due"}  # back on, but only 3 frames since 0
    assert hud.calls == [0, 4, 8]


def test_a_processor_may_switch_itself_off() -> None:
    class Once(Processor):
        name = "once"

        def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
            ctx.disable(self.name)
            return {"calibrated": True}

    p = Pipeline([Once(), Echo("after")])
    assert p.run(frame(0), CTX).ran == ["once", "after"]
    r = p.run(frame(1), CTX)
    assert r.skipped == {"once": "disabled"}
    assert r.outputs == {"after": True}


def test_unknown_names_raise_a_clear_value_error_reported_per_frame() -> None:
    p = Pipeline([Gate("hudd"), Echo("hud")])
    r = p.run(menu_frame(0, True), CTX)
    assert r.errors == [
        {
            "processor": "gate",
            "error": "ValueError: no processor named 'hudd' in this pipeline; known: 'gate', 'hud'",
        }
    ]
    assert r.ran == ["gate", "hud"]
    with pytest.raises(ValueError, match="no processor named 'x'"):
        Pipeline([Echo("a")], disabled=["x"])
    with pytest.raises(ValueError, match="no processor named 'x'"):
        Pipeline([Echo("a")]).disable("x")


def test_switching_outside_a_run_is_refused() -> None:
    ctx = ProcessContext(session_id="s")
    with pytest.raises(RuntimeError, match="only while a pipeline runs"):
        ctx.disable("hud")
    Pipeline([Gate("hud"), Echo("hud")]).run(menu_frame(0, True), ctx)
    with pytest.raises(RuntimeError, match="only while a pipeline runs"):
        ctx.is_enabled("hud")


def test_one_context_shared_by_two_pipelines_switches_only_the_running_one() -> None:
    a = Pipeline([Gate("hud"), Echo("hud")])
    b = Pipeline([Gate("hud"), Echo("hud")])
    a.run(menu_frame(0, True), CTX)
    assert a.disabled == {"hud"}
    assert b.disabled == frozenset()


def test_a_pipeline_may_start_with_processors_off_and_the_host_may_switch() -> None:
    hud = Echo("hud")
    p = Pipeline([Echo("a"), hud], disabled=["hud"])
    assert p.run(frame(0), CTX).skipped == {"hud": "disabled"}
    p.enable("hud")
    assert p.run(frame(1), CTX).ran == ["a", "hud"]
    p.disable("a")
    assert p.disabled == {"a"}


def test_end_runs_for_processors_that_are_off_and_may_ask_about_switches() -> None:
    class Asks(Counter):
        name = "asks"

        def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
            return {"counter_on": ctx.is_enabled("counter")}

    p = Pipeline([Counter(), Asks()], disabled=["counter"])
    results, errors = p.end(CTX)
    assert results == {"total": 0, "counter_on": False}
    assert errors == []


def test_snapshot_restore_carries_the_switches() -> None:
    a = Pipeline([Gate("counter"), Counter()])
    a.run(menu_frame(0, False), CTX)
    a.run(menu_frame(1, True), CTX)
    b = Pipeline([Gate("counter"), Counter()])
    b.restore(a.snapshot(), disabled=a.disabled)
    assert b.disabled == {"counter"}
    b.restore({}, disabled=[])
    assert b.disabled == frozenset()
    with pytest.raises(ValueError, match="no processor named 'other'"):
        b.restore({}, disabled=["other"])
    with pytest.raises(ValueError, match="must be a list of names"):
        b.restore({}, disabled="counter")
    assert b.disabled == frozenset()  # a bad restore changes nothing


class StageEnd(Echo):
    ends_stage = True


class Switcher(Processor):
    """Switches ``target`` off from whichever thread runs it."""

    name = "switcher"

    def __init__(self, target: str) -> None:
        self.target = target

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        ctx.disable(self.target)
        return None


def test_processors_that_end_a_stage_split_the_pipeline() -> None:
    assert Pipeline([]).stages == 1
    assert Pipeline([Echo("a"), Echo("b")]).stages == 1
    assert Pipeline([StageEnd("a"), Echo("b")]).stages == 2
    assert Pipeline([Echo("a"), StageEnd("b")]).stages == 1  # nothing after it: no stage
    assert Pipeline([StageEnd("a"), StageEnd("b"), Echo("c")]).stages == 3


def test_stages_run_one_by_one_give_what_run_gives() -> None:
    whole = Pipeline([StageEnd("a", rate=Rate(every=2)), Echo("b"), Counter()])
    staged = Pipeline([StageEnd("a", rate=Rate(every=2)), Echo("b"), Counter()])
    ctx = ProcessContext("s")
    for i in range(4):
        one = whole.run(Frame(index=i), ctx)
        result = staged.start(Frame(index=i))
        assert result.seq == i
        for stage in range(staged.stages):
            staged.run_stage(stage, result, ctx)
        assert (result.ran, result.skipped, result.outputs) == (one.ran, one.skipped, one.outputs)


def test_a_stage_on_another_thread_switches_its_own_pipeline() -> None:
    """Stage 1 of frame 0 switches after stage 0 of frame 1, on another thread, has begun
    and finished: the switch must still find its pipeline."""
    import threading

    go = threading.Event()

    class LateSwitcher(Switcher):
        def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
            go.wait(5)
            return super().process(frame, ctx)

    p = Pipeline([StageEnd("a"), LateSwitcher("a")])
    ctx = ProcessContext("s")
    first = p.start(Frame())
    p.run_stage(0, first, ctx)
    later = threading.Thread(target=p.run_stage, args=(1, first, ctx))
    with ctx._bound(p._switches):  # stage 0 of the next frame, on this thread, begins ...
        later.start()
    go.set()  # ... and has ended before stage 1 of frame 0 switches
    later.join(5)
    assert not first.errors
    assert p.disabled == {"a"}


class Gather(Processor):
    """Reentrant and stage-ending; each frame waits until ``expect`` frames are inside at once,
    so a test passes only if they really ran side by side."""

    name = "gather"
    reentrant = True
    ends_stage = True

    def __init__(self, expect: int = 2) -> None:
        import threading

        self.barrier = threading.Barrier(expect, timeout=5)
        self.setups = 0

    def setup(self, ctx: ProcessContext) -> None:
        import time

        time.sleep(0.05)  # long enough for both frames to find the processor not set up
        self.setups += 1

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.barrier.wait()
        return {"gathered": frame.index}


class ReentrantEcho(Echo):
    reentrant = True


def test_a_stage_is_parallel_only_with_every_processor_reentrant_and_one_after_it() -> None:
    assert Pipeline([Gather(), Echo("b")]).parallel(0)
    assert not Pipeline([Gather(), Echo("b")]).parallel(1)  # the last stage counts frames
    assert not Pipeline([Gather()]).parallel(0)
    assert not Pipeline([StageEnd("a"), Echo("b")]).parallel(0)
    assert not Pipeline([ReentrantEcho("a"), StageEnd("b"), Echo("c")]).parallel(0)
    assert Pipeline([ReentrantEcho("a"), Gather(), Echo("c")]).parallel(0)


def test_frames_of_a_parallel_stage_run_side_by_side_with_switches_read_in_order() -> None:
    from concurrent.futures import ThreadPoolExecutor

    gather = Gather()
    p = Pipeline([ReentrantEcho("every2", rate=Rate(every=2)), gather, Counter()])
    ctx = ProcessContext("s")
    results = [p.start(frame(i)) for i in range(2)]
    chosen = [p.enter_stage(0, r) for r in results]  # in frame order, on the host's thread
    with ThreadPoolExecutor(2) as pool:
        pairs = zip(results, chosen, strict=True)
        calls = [pool.submit(p.run_stage, 0, r, ctx, c) for r, c in pairs]
        for call in calls:
            call.result()
    assert gather.setups == 1  # two frames met the processor unready; one set it up
    assert [r.outputs["gathered"] for r in results] == [0, 1]
    assert results[0].ran == ["every2", "gather"]
    assert results[1].ran == ["gather"]
    assert results[1].skipped == {"every2": "not_due"}
    for r in results:
        p.run_stage(1, r, ctx)
    assert [r.outputs["seen"] for r in results] == [1, 2]
    assert p.running() == []


def test_running_names_each_frame_of_a_parallel_stage() -> None:
    import threading

    release = threading.Event()
    inside = threading.Barrier(3, timeout=5)

    class Hold(ReentrantEcho):
        def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
            inside.wait()
            release.wait(5)
            return None

    p = Pipeline([Hold("hold"), StageEnd("end"), Echo("c")])
    ctx = ProcessContext("s")
    results = [p.start(frame(i)) for i in (7, 8)]
    threads = [
        threading.Thread(target=p.run_stage, args=(0, r, ctx, p.enter_stage(0, r))) for r in results
    ]
    for t in threads:
        t.start()
    inside.wait()
    calls = sorted(p.running(), key=lambda c: c.frame)
    release.set()
    for t in threads:
        t.join(5)
    assert [(c.processor, c.stage, c.frame) for c in calls] == [("hold", 0, 7), ("hold", 0, 8)]
    assert p.running() == []
