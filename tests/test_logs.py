"""Log lines name their session: in the broker's tasks and worker threads, as text or JSON."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import orjson
import pytest

from framebroker.core import Frame, ProcessContext, Processor
from framebroker.logs import JsonFormatter, SessionFilter, configure_logging, in_session
from framebroker.plugins import ProcessorRegistry
from framebroker.runtime import Broker, BrokerConfig
from framebroker.sessions import FrameIn

from .core.helpers import live_session


class Chatty(Processor):
    """Logs from the worker thread, as a user's model would, knowing nothing of sessions."""

    name: ClassVar[str] = "chatty"

    def process(self, frame: Frame, ctx: ProcessContext) -> dict[str, Any] | None:
        logging.getLogger("user.model").warning("looked at frame %d", frame.index)
        return None


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(SessionFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_processor_log_line_carries_its_session_id() -> None:
    keep = Keep()
    logger = logging.getLogger("user.model")
    logger.addHandler(keep)
    reg = ProcessorRegistry()
    reg.register("chatty", Chatty)
    broker = Broker(reg, config=BrokerConfig(max_workers=2, default_pipeline=("chatty",)))
    await broker.start()
    try:
        a = await live_session(broker, session_id="cam-a", transport="t")
        b = await live_session(broker, session_id="cam-b", transport="t")
        await asyncio.gather(broker.submit(a.id, FrameIn()), broker.submit(b.id, FrameIn()))
    finally:
        await broker.stop()
        logger.removeHandler(keep)
    assert sorted(getattr(r, "session_id", None) for r in keep.records) == ["cam-a", "cam-b"]


def test_in_session_sets_the_session_only_inside_the_call() -> None:
    from framebroker.logs import current_session

    assert in_session("s1", current_session)() == "s1"
    assert current_session() is None


def test_json_lines_hold_the_fields_and_extras() -> None:
    record = logging.LogRecord("framebroker.x", logging.ERROR, __file__, 1, "bad %s", ("frame",),
                               None)  # fmt: skip
    record.transport = "rest"
    SessionFilter().filter(record)
    in_session("s9", SessionFilter().filter, record)()
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == "bad frame"
    assert line["level"] == "error"
    assert line["logger"] == "framebroker.x"
    assert line["session_id"] == "s9"
    assert line["transport"] == "rest"
    assert line["time"].endswith("Z")


def test_configure_logging_writes_text_with_the_session_tag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("info", "text")
        in_session("cam-7", logging.getLogger("framebroker.t").info, "hello")()
        logging.getLogger("framebroker.t").info("no session")
        err = capsys.readouterr().err.splitlines()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert err[-2].endswith("framebroker.t [cam-7]: hello")
    assert err[-1].endswith("framebroker.t: no session")


@pytest.mark.parametrize(("level", "shown"), [("info", False), ("debug", True)])
def test_ice_state_lines_show_only_at_debug(level: str, shown: bool) -> None:
    root = logging.getLogger()
    handlers, old_level = list(root.handlers), root.level
    try:
        configure_logging(level)
        assert logging.getLogger("aioice.ice").isEnabledFor(logging.INFO) is shown
        assert logging.getLogger("aioice.ice").isEnabledFor(logging.WARNING)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(old_level)
        logging.getLogger("aioice").setLevel(logging.NOTSET)
