"""Finding processors by name: built-ins and installed plugins, or ``module:attr`` paths.

Plugins register under the entry-point group ``framebroker.processors``; a user model that is
not packaged is named by dotted path (``mymodels.pulse:PulseModel``), the way uvicorn loads
``module:app``.

A spec is a name or ``{"name": ..., **params}``. Three keys of it belong to the pipeline, not to
the processor, so every processor gets them without its class knowing: ``"rate"``
(``{"every": N}`` and/or ``{"interval": S}``, replacing the class's declared
:class:`~framebroker.core.Rate` for this instance) and ``"enabled"`` (``false`` starts it
switched off, for another processor to switch on), and ``"ends_stage"`` (``true`` lets the
processors after it work on the previous frame meanwhile, see
:attr:`~framebroker.core.Pipeline.stages`; a stage of processors whose class is
``reentrant``, like ``detect``, then takes several frames at once). They are namespaced
rather than bare ``every``/``interval`` keys because processors already use those names for
their own parameters (``faces`` has an ``every``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from .core.manager import ProcessorSpec
from .core.pipeline import Pipeline
from .core.processor import Processor, Rate
from .errors import ProcessorLoadError

__all__ = ["ENTRY_POINT_GROUP", "ProcessorRegistry", "import_from_string", "spec_name"]

ENTRY_POINT_GROUP = "framebroker.processors"

Factory = Callable[..., Processor]

PIPELINE_KEYS = frozenset({"name", "rate", "enabled", "ends_stage"})
"""Spec keys the registry and pipeline read; the rest are the processor's parameters."""

_RATE_KEYS = frozenset({"every", "interval"})


def spec_name(spec: ProcessorSpec) -> str:
    """The processor name a spec (a name, or ``{"name": ..., **params}``) asks for."""
    return spec if isinstance(spec, str) else str(spec.get("name"))


def import_from_string(path: str) -> Any:
    """Load ``"package.module:attr"`` (attr may be dotted); raises :class:`ProcessorLoadError`."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ProcessorLoadError(f'expected "module:attribute", got {path!r}')
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProcessorLoadError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ProcessorLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


class ProcessorRegistry:
    """Names to processor factories, plus defaults applied to every instance of a name.

    ``defaults`` lets the server configure built-ins (tracker thresholds from the settings)
    while a request may still override single parameters.
    """

    def __init__(self, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._factories: dict[str, Factory] = {}
        self._defaults = {k: dict(v) for k, v in (defaults or {}).items()}
        self._scanned = False

    def register(self, name: str, factory: Factory) -> None:
        self._factories[name] = factory

    def warm_up(self, names: Iterable[str]) -> None:
        """Run ``warm_up`` of the named processors (those that are classes), given those of
        the defaults for them that it names as parameters (a detector's runtime, say)."""
        for name in names:
            factory = self.resolve(name)
            if isinstance(factory, type) and issubclass(factory, Processor):
                wanted = inspect.signature(factory.warm_up).parameters
                given = {k: v for k, v in self._defaults.get(name, {}).items() if k in wanted}
                factory.warm_up(**given)

    def _scan_entry_points(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self._factories.setdefault(ep.name, _LazyEntryPoint(ep.name, ep.value))

    def names(self) -> list[str]:
        self._scan_entry_points()
        return sorted(self._factories)

    def resolve(self, name: str) -> Factory:
        self._scan_entry_points()
        factory = self._factories.get(name)
        if factory is not None:
            return factory
        if ":" in name:
            obj = import_from_string(name)
            if not callable(obj):
                raise ProcessorLoadError(f"{name!r} is not a class or factory")
            return obj  # type: ignore[no-any-return]
        known = ", ".join(self.names()) or "none"
        raise ProcessorLoadError(f"unknown processor {name!r}; known: {known}")

    def check_request(self, specs: Sequence[ProcessorSpec]) -> None:
        """Refuse what a client may not ask for: unregistered code (``module:attr`` would let
        a request import and call anything on the server) and config-only parameters."""
        known = set(self.names())
        for spec in specs:
            name = spec if isinstance(spec, str) else spec.get("name")
            if not isinstance(name, str) or name not in known:
                raise ProcessorLoadError(
                    f"unknown processor {name!r}; a request may name only registered "
                    f"processors: {', '.join(sorted(known))}",
                    field="pipeline",
                )
            if isinstance(spec, str):
                continue
            factory = self.resolve(name)
            target = factory.target() if isinstance(factory, _LazyEntryPoint) else factory
            locked: set[str] = set(getattr(target, "config_only", frozenset())) & set(spec)
            if locked:
                raise ProcessorLoadError(
                    f"processor {name!r}: {sorted(locked)} may only be set in the server's "
                    "configuration",
                    field="pipeline",
                )

    def build(self, spec: ProcessorSpec) -> Processor:
        """A fresh processor instance for one session, with the spec's ``rate`` if it has one.

        ``enabled`` is a pipeline's business: it is checked here and applied by
        :meth:`pipeline`. Raises :class:`ProcessorLoadError` for a bad spec.
        """
        return self._build(spec)[0]

    def _build(self, spec: ProcessorSpec) -> tuple[Processor, bool]:
        if isinstance(spec, str):
            name, params = spec, {}
        else:
            params = dict(spec)
            name = params.pop("name", None)
            if not isinstance(name, str):
                raise ProcessorLoadError(f"a processor spec needs a string 'name', got {spec!r}")
        factory = self.resolve(name)
        kwargs = {**self._defaults.get(name, {}), **params}
        rate = _rate(name, kwargs.pop("rate", None))
        enabled = kwargs.pop("enabled", True)
        ends_stage = kwargs.pop("ends_stage", None)
        for key, value in (("enabled", enabled), ("ends_stage", ends_stage)):
            if not isinstance(value, bool) and (key == "enabled" or value is not None):
                raise ProcessorLoadError(
                    f"processor {name!r}: {key} must be true or false, got {value!r}"
                )
        try:
            proc = factory(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ProcessorLoadError(f"cannot build processor {name!r}: {exc}") from exc
        if not isinstance(proc, Processor):
            raise ProcessorLoadError(
                f"{name!r} built a {type(proc).__name__}, expected a framebroker Processor"
            )
        if rate is not None:
            # An instance attribute shadows the class's declared rate for this session only.
            proc.rate = rate
        if ends_stage is not None:
            proc.ends_stage = ends_stage
        return proc, enabled

    def pipeline(self, specs: Sequence[ProcessorSpec]) -> Pipeline:
        """A pipeline of fresh instances; raises :class:`ProcessorLoadError` for a bad spec."""
        built = [self._build(s) for s in specs]
        try:
            return Pipeline(
                [proc for proc, _ in built],
                disabled=[proc.name for proc, enabled in built if not enabled],
            )
        except ValueError as exc:
            raise ProcessorLoadError(str(exc)) from exc


def _rate(name: str, value: object) -> Rate | None:
    """The ``rate`` of a spec: ``None`` (keep the class's), or a mapping of every/interval."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value or not set(value) <= _RATE_KEYS:
        raise ProcessorLoadError(
            f'processor {name!r}: rate must be an object with "every" and/or "interval", '
            f"got {value!r}"
        )
    try:
        return Rate(**value)
    except ValueError as exc:
        raise ProcessorLoadError(f"processor {name!r}: rate {exc}") from exc


class _LazyEntryPoint:
    """Imports a plugin only when a session first asks for it."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value
        self._target: Factory | None = None

    def target(self) -> Factory:
        if self._target is None:
            self._target = import_from_string(self.value)
        return self._target

    def __call__(self, **kwargs: Any) -> Processor:
        return self.target()(**kwargs)
