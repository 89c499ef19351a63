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

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from .core.manager import ProcessorSpec
from .core.pipeline import Pipeline
from .core.processor import REQUIRED, Processor, Rate, keyword_options
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

    def options(self, name: str) -> dict[str, Any] | None:
        """The options processor ``name`` takes, with their defaults (see
        :meth:`Processor.options`); ``None``: any. Raises :class:`ProcessorLoadError`."""
        factory = self.resolve(name)
        target = factory.target() if isinstance(factory, _LazyEntryPoint) else factory
        declared = getattr(target, "options", None)
        if isinstance(target, type) and issubclass(target, Processor) and callable(declared):
            found: dict[str, Any] | None = declared()
            return found
        return keyword_options(target)

    def settings(self, spec: ProcessorSpec, index: int | None = None) -> dict[str, Any]:
        """What a processor built from ``spec`` runs with: its name, every option with the
        server's default or the class's filled in, and the spec's pipeline keys.

        Raises :class:`ProcessorLoadError` for a spec naming an option the processor does not
        take or leaving out one it needs; ``index`` (its place in a pipeline) makes the
        error's field ``pipeline[index].option``.
        """
        name, params = _split(spec)
        options = self.options(name)
        own = {k: v for k, v in params.items() if k not in PIPELINE_KEYS}
        if options is not None:
            where = f"pipeline[{index}]." if index is not None else ""
            for key in own:
                if key not in options:
                    close = difflib.get_close_matches(key, list(options), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    known = ", ".join(sorted(options)) or "none"
                    raise ProcessorLoadError(
                        f"{where}{key}: processor {name!r} has no option {key!r}{hint}; "
                        f"its options: {known}",
                        field=f"{where}{key}",
                    )
            given = {**self._defaults.get(name, {}), **own}
            missing = sorted(k for k, v in options.items() if v is REQUIRED and k not in given)
            if missing:
                raise ProcessorLoadError(
                    f"processor {name!r} needs the option(s) {', '.join(missing)}",
                    field=f"pipeline[{index}]" if index is not None else None,
                )
        merged = {k: v for k, v in (options or {}).items() if v is not REQUIRED}
        merged.update(self._defaults.get(name, {}))
        merged.update(own)
        pipeline_keys = {k: params[k] for k in ("rate", "enabled", "ends_stage") if k in params}
        safe: dict[str, Any] = _json_safe({"name": name, **merged, **pipeline_keys})
        return safe

    def build(self, spec: ProcessorSpec) -> Processor:
        """A fresh processor instance for one session, with the spec's ``rate`` if it has one.

        ``enabled`` is a pipeline's business: it is checked here and applied by
        :meth:`pipeline`. Raises :class:`ProcessorLoadError` for a bad spec.
        """
        return self._build(spec)[0]

    def _build(
        self, spec: ProcessorSpec, index: int | None = None
    ) -> tuple[Processor, bool, dict[str, Any]]:
        name, params = _split(spec)
        factory = self.resolve(name)
        settings = self.settings(spec, index)  # an unknown option, named, before a TypeError
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
        return proc, enabled, settings

    def pipeline(self, specs: Sequence[ProcessorSpec]) -> Pipeline:
        """A pipeline of fresh instances, with each one's :meth:`settings`; raises
        :class:`ProcessorLoadError` for a bad spec."""
        built = [self._build(s, i) for i, s in enumerate(specs)]
        try:
            return Pipeline(
                [proc for proc, _, _ in built],
                disabled=[proc.name for proc, enabled, _ in built if not enabled],
                settings=[settings for _, _, settings in built],
            )
        except ValueError as exc:
            raise ProcessorLoadError(str(exc)) from exc


def _split(spec: ProcessorSpec) -> tuple[str, dict[str, Any]]:
    """A spec's name and its other keys."""
    if isinstance(spec, str):
        return spec, {}
    params = dict(spec)
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise ProcessorLoadError(f"a processor spec needs a string 'name', got {spec!r}")
    return name, params


def _json_safe(value: Any) -> Any:
    """``value`` as JSON can hold it: containers kept, anything else but plain scalars by
    its ``repr``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    return repr(value)


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
