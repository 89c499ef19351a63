"""The start-up check of the uvicorn names the server hooks into: it passes on the installed
uvicorn, covers every override, and refuses a uvicorn that renamed or changed one, in one
line from the command line."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from pathlib import Path

import pytest
import uvicorn
from packaging.requirements import Requirement
from packaging.version import Version
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from framebroker.cli import main
from framebroker.errors import ConfigError, UvicornIncompatible
from framebroker.server.body_chunks import ChunkedBodyProtocol
from framebroker.server.deadlines import DeadlineProtocol
from framebroker.server.serve import _Companion, _MainServer
from framebroker.server.uvicorn_hooks import HOOKS, Hook, check_uvicorn, hook_problems
from framebroker.server.ws_protocol import PreframedWebSocketProtocol


def test_the_installed_uvicorn_has_every_hook() -> None:
    assert hook_problems() == []
    check_uvicorn()


@pytest.mark.parametrize(
    "subclass",
    [ChunkedBodyProtocol, DeadlineProtocol, PreframedWebSocketProtocol, _Companion, _MainServer],
)
def test_every_uvicorn_method_overridden_is_a_hook(subclass: type) -> None:
    hooked = {(h.owner.rpartition(":")[2], h.name) for h in HOOKS}
    uvicorn_bases = [c for c in subclass.__mro__ if c.__module__.startswith("uvicorn.")]
    for name, value in vars(subclass).items():
        if not callable(value) or (name.startswith("__") and name != "__init__"):
            continue
        for base in uvicorn_bases:
            if name in vars(base):
                assert (base.__name__, name) in hooked, f"{subclass.__name__}.{name}"


def refusal() -> UvicornIncompatible:
    with pytest.raises(UvicornIncompatible) as caught:
        check_uvicorn()
    error = caught.value
    assert isinstance(error, ConfigError)
    assert error.code == "uvicorn_incompatible"
    assert error.uvicorn_version == uvicorn.__version__
    assert f"uvicorn {uvicorn.__version__} " in error.message
    assert "\n" not in error.message
    return error


def test_a_renamed_method_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(HttpToolsProtocol, "_start_asgi_task")
    error = refusal()
    assert error.problems == (
        "HttpToolsProtocol._start_asgi_task is missing (used by server/deadlines.py)",
    )


def test_a_method_that_moved_out_of_uvicorn_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # asyncio.Protocol still has one, but it does not count the connection.
    monkeypatch.delattr(HttpToolsProtocol, "connection_made")
    assert "HttpToolsProtocol.connection_made is missing" in refusal().message


def test_a_changed_signature_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def start(self: HttpToolsProtocol, cycle: object, app: object, context: object) -> None: ...

    monkeypatch.setattr(HttpToolsProtocol, "_start_asgi_task", start)
    assert refusal().problems == (
        "HttpToolsProtocol._start_asgi_task changed: expected (self, cycle, app), "
        "found (self, cycle, app, context) (used by server/deadlines.py)",
    )


def test_an_override_uvicorn_no_longer_calls_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if a release created the request's task inline: the body timer would never start.
    source = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "self._start_asgi_task(" in source

    def on_headers_complete(self: HttpToolsProtocol) -> None:
        self.loop.create_task(self.cycle.run_asgi(self.app))

    monkeypatch.setattr(HttpToolsProtocol, "on_headers_complete", on_headers_complete)
    problems = refusal().problems
    assert (
        "HttpToolsProtocol._start_asgi_task is unused: HttpToolsProtocol.on_headers_complete "
        "does not call it (used by server/deadlines.py)"
    ) in problems


def test_an_attribute_uvicorn_no_longer_sets_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def init(self: RequestResponseCycle, *args: object, **kwargs: object) -> None:
        self.chunks = bytearray()

    monkeypatch.setattr(RequestResponseCycle, "__init__", init)
    message = refusal().message
    assert "RequestResponseCycle.body is unused: RequestResponseCycle.__init__ does not set" in (
        message
    )
    assert "server/body_chunks.py" in message


def test_a_moved_class_or_module_is_refused() -> None:
    moved = Hook("uvicorn.protocols.http.httptools_v2:HttpToolsProtocol", "on_body", "x.py")
    renamed = Hook("uvicorn.server:Serving", "started", "y.py")
    assert hook_problems([moved, renamed]) == [
        "module uvicorn.protocols.http.httptools_v2 is missing (used by x.py)",
        "uvicorn.server.Serving is missing (used by y.py)",
    ]
    with pytest.raises(UvicornIncompatible, match="httptools_v2 is missing"):
        check_uvicorn([moved])


def test_serve_exits_2_with_one_line_naming_the_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delattr(HttpToolsProtocol, "_should_upgrade")
    assert main(["serve", "--port", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"framebroker: uvicorn {uvicorn.__version__} lacks names")
    assert "HttpToolsProtocol._should_upgrade is missing" in lines[0]
    assert "install a tested uvicorn (uvicorn[standard]" in lines[0]


def test_ci_runs_the_deadline_tests_on_the_newest_uvicorn_allowed() -> None:
    script = (Path(__file__).parents[2] / "scripts" / "test.sh").read_text()
    found = re.search(r"^UVICORN_NEWEST=(\S+)$", script, re.MULTILINE)
    assert found, "scripts/test.sh names no UVICORN_NEWEST"
    newest = Version(found[1])
    requires = importlib.metadata.requires("framebroker") or []
    allowed = Requirement(next(r for r in requires if r.startswith("uvicorn"))).specifier
    assert newest in allowed
    assert Version(f"{newest.major}.{newest.minor + 1}") not in allowed, (
        f"pyproject.toml allows uvicorn past {newest}: test that one in scripts/test.sh"
    )
