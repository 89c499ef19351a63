from __future__ import annotations

import pytest

from framebroker.core import Processor
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
    with pytest.raises(ProcessorLoadError, match="cannot build processor"):
        reg.build({"name": "tests.core.helpers:Counter", "bogus": 1})
    with pytest.raises(ProcessorLoadError, match="expected a framebroker Processor"):
        reg.build("builtins:dict")
    reg.register("echo", Echo)
    with pytest.raises(ProcessorLoadError, match="unique"):
        reg.pipeline(["echo", "echo"])


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
