"""Small processors for driving the core in tests."""

from __future__ import annotations

from typing import Any, ClassVar

from framebroker.core import Frame, ProcessContext, Processor, Rate


class Echo(Processor):
    """Outputs a fixed dict and counts its calls."""

    def __init__(
        self, name: str = "echo", out: dict[str, Any] | None = None, rate: Rate | None = None
    ) -> None:
        self.name = name  # type: ignore[misc]
        self.out = out if out is not None else {name: True}
        self.calls: list[int] = []
        self.setups = 0
        if rate is not None:
            self.rate = rate

    def setup(self, ctx: ProcessContext) -> None:
        self.setups += 1

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.calls.append(frame.index)
        return dict(self.out)


class Boom(Processor):
    name: ClassVar[str] = "boom"

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        raise RuntimeError(f"bad frame {frame.index}")

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        raise RuntimeError("bad end")


class Counter(Processor):
    """Keeps state: the number of frames seen, snapshot-able."""

    name: ClassVar[str] = "counter"

    def __init__(self) -> None:
        self.seen = 0

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        self.seen += 1
        return {"seen": self.seen}

    def end(self, ctx: ProcessContext) -> dict[str, Any] | None:
        return {"total": self.seen}

    def snapshot(self) -> dict[str, Any] | None:
        return {"seen": self.seen}

    def restore(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])


async def live_session(broker: Any, **kwargs: Any) -> Any:
    """``broker.create(**kwargs)``, handing back the live :class:`~framebroker.core.Session`
    itself: runtime tests look inside it (stats, pipeline), which no transport may."""
    info = await broker.create(**kwargs)
    return broker.get(info.id)
