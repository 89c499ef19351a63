"""The servers the client tests talk to, started once for the package.

``keyed`` is the real server over HTTPS with a certificate from a test CA (the clients trust
it through ``verify=CA file``), an API key, and limits low enough to reach: a 1 MB body,
4 frames a second per session, 12 sessions in all, 150 KB Socket.IO frames. ``tight`` has
limits a few sockets reach: 3 connections on its port, one session per client address.
``live`` (in test_live_client) runs the people counter on the bundled clip, without TLS or
keys. :func:`loop_threads` names the sync clients' threads still running (none, once closed);
:func:`leaves_no_socket_open` fails a block that leaves a socket of its own open;
:func:`killable` is a server of a test's own, for one that kills it under its client.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from ..server import RunningServer, running_server

KEY = "client-e2e-key-" + "k" * 20
MAX_BODY = 1_000_000
MAX_SESSIONS = 12
MODELS = "tests.e2e.webrtc_models"
TIGHT_CONNECTIONS = 3
LOOP_THREADS = (
    "framebroker-live-client",
    "framebroker-video-analysis-client",
    "framebroker-webrtc-stream",
)


def loop_threads() -> list[str]:
    """The sync clients' event loop threads still running."""
    return [t.name for t in threading.enumerate() if t.name in LOOP_THREADS]


def open_sockets() -> set[socket.socket]:
    """This process's sockets that are not closed, as the garbage collector finds them."""
    found = set()
    for thing in gc.get_objects():
        try:
            if isinstance(thing, socket.socket) and thing.fileno() != -1:
                found.add(thing)
        except ReferenceError:  # a weak proxy whose object is gone
            continue
    return found


@contextlib.contextmanager
def leaves_no_socket_open() -> Iterator[None]:
    """Fails when a socket opened in the block is still open at its end. The check runs as
    the block ends, with no turn of an event loop in between: a client that was refused or
    failed has closed every connection it opened by the time it raised, so an event loop
    that ends right after leaves nothing open ("unclosed transport")."""
    before = open_sockets()
    yield
    left = open_sockets() - before
    assert not left, f"{len(left)} socket(s) left open: {left}"


@dataclass(frozen=True)
class Keyed:
    url: str
    cafile: Path
    running: RunningServer

    @property
    def ws(self) -> str:
        return self.url.replace("https://", "wss://")


@pytest.fixture(scope="package")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    data = tmp_path_factory.mktemp("client-keyed")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = data / "cert.pem", data / "key.pem", data / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    config = data / "fb.toml"
    config.write_text(
        f'[auth]\napi_keys = {{ci = "{KEY}"}}\n'
        f"[limits]\nmax_body_bytes = {MAX_BODY}\nmax_fps_per_session = 4\n"
        f"max_sessions = {MAX_SESSIONS}\n"
        '[analysis]\nsecret_key = "a-client-e2e-secret-that-is-long-enough"\n'
        "window_frames = 2\nmax_frame_bytes = 150000\n"
    )
    args = ["--config", str(config), "--ssl", "--ssl_certfile", str(certfile)]
    args += ["--ssl_keyfile", str(keyfile), "--model", f"{MODELS}:FrameNumber"]
    trusted = ssl.create_default_context(cafile=str(cafile))
    with running_server(data, *args, scheme="https", verify=trusted) as running:  # type: ignore[arg-type]
        yield Keyed(running.url, cafile, running)


@dataclass(frozen=True)
class Tight:
    url: str

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://")


@pytest.fixture(scope="package")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tight]:
    data = tmp_path_factory.mktemp("client-tight")
    config = data / "fb.toml"
    config.write_text(
        f"[limits]\nmax_connections = {TIGHT_CONNECTIONS}\nmax_sessions_per_client = 1\n"
    )
    args = ["--config", str(config), "--model", f"{MODELS}:FrameNumber"]
    with running_server(data, *args) as running:
        yield Tight(running.url)


@contextlib.contextmanager
def server_on(port: int, data: Path, *args: str, timeout: float = 90) -> Iterator[RunningServer]:
    """``framebroker serve`` on this ``port`` (so that a client can find it again after a
    restart), stopped at the end of the block."""
    data.mkdir(parents=True, exist_ok=True)
    log = data / f"server-{port}-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBROKER_")}
    command = [sys.executable, "-m", "framebroker", "serve", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--data-dir", str(data), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = RunningServer(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start in {timeout}s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def killable(data: Path, config_text: str = "") -> Iterator[RunningServer]:
    """A plain server of the test's own, with the video analysis API (windows of 2 frames),
    the test WebRTC model and ``config_text`` (more TOML), that the test may kill
    (``stop(signal.SIGKILL)``)."""
    config = data / "fb.toml"
    data.mkdir(parents=True, exist_ok=True)
    config.write_text(
        '[analysis]\nsecret_key = "a-client-e2e-secret-that-is-long-enough"\nwindow_frames = 2\n'
        + config_text
    )
    with running_server(data, "--config", str(config), "--model", f"{MODELS}:FrameNumber") as s:
        yield s
