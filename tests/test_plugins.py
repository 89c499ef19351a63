from __future__ import annotations

from typing import Any

import pytest

from framebroker.core import Frame, ProcessContext, Processor, Rate
from framebroker.errors import ProcessorLoadError
from framebroker.plugins import ProcessorRegistry, import_from_string

from .core.helpers import Counter, Echo


def test_import_from_string() -> None:
    assert import_from_string("tests.core.helpers:Counter") is Counter
    with pytest.raises(ProcessorLoadError, match='expected "module:attribute"'):
        import_from_string("tests.core.helpers.Counter")
    with pytest.raises(ProcessorLoadError, match="cannot import module"):
        import_from_string("no_such_module_xyz:Thing")
    with pytest.raises(ProcessorLoadError, match="has no attribute"):
        import_from_string("tests.core.helpers:Nope")


def test_builds_by_name_path_and_spec_with_defaults() -> None:
    reg = ProcessorRegistry(defaults={"echo": {"out": {"d": 1}}})
    reg.register("echo", Echo)
    e = reg.build("echo")
    assert isinstance(e, Echo)
    assert e.out == {"d": 1}
    e2 = reg.build({"name": "echo", "out": {"d": 2}})
    assert isinstance(e2, Echo)
    assert e2.out == {"d": 2}
    assert isinstance(reg.build("tests.core.helpers:Counter"), Counter)


def test_entry_points_provide_the_builtins() -> None:
    reg = ProcessorRegistry()
    assert {"bytetrack", "annotate"} <= set(reg.names())
    assert isinstance(reg.build("bytetrack"), Processor)


def test_errors_are_clear() -> None:
    reg = ProcessorRegistry()
    with pytest.raises(ProcessorLoadError, match="unknown processor 'nope'; known: "):
        reg.build("nope")
    with pytest.raises(ProcessorLoadError, match="needs a string 'name'"):
        reg.build({"track_thresh": 1})
    with pytest.raises(ProcessorLoadError, match="has no option 'bogus'; its options: none"):
        reg.build({"name": "tests.core.helpers:Counter", "bogus": 1})
    with pytest.raises(ProcessorLoadError, match="expected a framebroker Processor"):
        reg.build("builtins:dict")
    reg.register("echo", Echo)
    with pytest.raises(ProcessorLoadError, match="unique"):
        reg.pipeline(["echo", "echo"])


def test_a_spec_sets_the_rate_of_any_processor_without_its_class_knowing() -> None:
    reg = ProcessorRegistry(defaults={"counter": {"rate": {"interval": 2.0}}})
    reg.register("echo", Echo)
    reg.register("counter", Counter)
    e = reg.build({"name": "echo", "rate": {"every": 5}})
    assert e.rate == Rate(every=5)
    assert Echo("other").rate == Rate()  # the class's rate is untouched
    assert reg.build("counter").rate == Rate(interval=2.0)
    assert reg.build({"name": "counter", "rate": {"every": 2}}).rate == Rate(every=2)
    p = reg.pipeline([{"name": "echo", "rate": {"every": 3}}])
    ctx = ProcessContext(session_id="s")
    ran = [p.run(Frame(), ctx).ran for _ in range(4)]
    assert ran == [["echo"], [], [], ["echo"]]


def test_faces_keeps_its_own_every_beside_the_spec_rate() -> None:
    from framebroker.processors.face_gallery import FaceGallery

    reg = ProcessorRegistry()
    reg.register("faces", FaceGallery)
    faces = reg.build({"name": "faces", "every": 7, "rate": {"every": 2}})
    assert isinstance(faces, FaceGallery)
    assert (faces.every, faces.rate) == (7, Rate(every=2))


def test_a_spec_may_start_a_processor_switched_off() -> None:
    reg = ProcessorRegistry()
    reg.register("echo", Echo)
    p = reg.pipeline(["tests.core.helpers:Counter", {"name": "echo", "enabled": False}])
    assert p.disabled == {"echo"}
    assert p.run(Frame(), ProcessContext(session_id="s")).skipped == {"echo": "disabled"}
    assert reg.pipeline([{"name": "echo", "enabled": True}]).disabled == frozenset()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rate": 5}, 'rate must be an object with "every" and/or "interval", got 5'),
        ({"rate": {}}, "rate must be an object"),
        ({"rate": {"every": 2, "fps": 3}}, "rate must be an object"),
        ({"rate": {"every": 0}}, "processor 'echo': rate every must be an integer >= 1, got 0"),
        ({"rate": {"interval": -1}}, "rate interval must be a finite number >= 0, got -1"),
        ({"enabled": "no"}, "processor 'echo': enabled must be true or false, got 'no'"),
    ],
)
def test_bad_rates_and_switches_are_clear(extra: dict[str, object], message: str) -> None:
    reg = ProcessorRegistry()
    reg.register("echo", Echo)
    with pytest.raises(ProcessorLoadError, match=message):
        reg.pipeline([{"name": "echo", **extra}])


def test_warm_up_runs_once_per_named_class() -> None:
    calls: list[str] = []

    class Warm(Counter):
        @classmethod
        def warm_up(cls) -> None:
            calls.append(cls.__name__)

    reg = ProcessorRegistry()
    reg.register("warm", Warm)

    def make_warm() -> Warm:
        return Warm()

    reg.register("factory", make_warm)
    reg.warm_up(["warm", "factory"])
    assert calls == ["Warm"]


def test_the_library_exports_every_builtin_processor() -> None:
    import framebroker

    for name in framebroker.__all__:
        assert getattr(framebroker, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = framebroker.Nope  # type: ignore[attr-defined]


def test_a_spec_can_make_any_processor_end_a_stage() -> None:
    reg = ProcessorRegistry()
    pipeline = reg.pipeline([{"name": "bytetrack", "ends_stage": True}, "annotate"])
    assert pipeline.stages == 2
    assert reg.pipeline(["bytetrack", "annotate"]).stages == 1
    with pytest.raises(ProcessorLoadError, match="ends_stage must be true or false"):
        reg.pipeline([{"name": "bytetrack", "ends_stage": "yes"}])
    with pytest.raises(ProcessorLoadError, match="enabled must be true or false"):
        reg.pipeline([{"name": "bytetrack", "enabled": None}])


def test_an_unknown_option_is_named_with_its_field_and_the_known_ones() -> None:
    reg = ProcessorRegistry()
    with pytest.raises(ProcessorLoadError) as caught:
        reg.pipeline(["annotate", {"name": "bytetrack", "track_tresh": 0.6}])
    assert caught.value.field == "pipeline[1].track_tresh"
    assert caught.value.message.startswith(
        "pipeline[1].track_tresh: processor 'bytetrack' has no option 'track_tresh' "
        "(did you mean 'track_thresh'?); its options: duplicate_iou_distance, frame_rate, "
    )


class Needs(Processor):
    name = "needs"

    def __init__(self, size: int, *, colour: str = "red", **_: object) -> None:
        self.size = size

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        return None


class Strict(Needs):
    name = "strict"

    def __init__(self, size: int, *, colour: str = "red") -> None:
        super().__init__(size, colour=colour)


def test_a_required_option_left_out_is_named_and_kwargs_take_anything() -> None:
    reg = ProcessorRegistry(defaults={"strict": {"colour": "blue"}})
    reg.register("needs", Needs)
    reg.register("strict", Strict)
    with pytest.raises(ProcessorLoadError, match="processor 'strict' needs the option"):
        reg.pipeline(["strict"])
    assert reg.build({"name": "needs", "size": 2, "anything": 1}).name == "needs"
    pipeline = reg.pipeline([{"name": "strict", "size": 3, "rate": {"every": 2}}, "annotate"])
    assert pipeline.settings == [
        {"name": "strict", "size": 3, "colour": "blue", "rate": {"every": 2}},
        {"name": "annotate", "quality": 90, "class_names": None},
    ]
