"""Start `framebroker serve` on a free loopback port for a benchmark, and stop it after."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

WORKER_NODE = re.compile(r"-w(\d+)\.")
"""A worker's index in the ids of the sessions it makes (``<node>-w<i>.<random>``)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def process_tree(pid: int) -> dict[int, str]:
    """``pid`` and every process under it (a supervisor's workers, its redis-server), each
    with its command name (Linux /proc)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(")")
        names[int(proc.name)] = name
        children.setdefault(int(rest.split()[1]), []).append(int(proc.name))
    tree, todo = {}, [pid]
    while todo:
        p = todo.pop()
        if p in names:
            tree[p] = names[p]
            todo += children.get(p, [])
    return tree


@contextlib.contextmanager
def framebroker_server(
    *args: str,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[tuple[str, int]]:
    """Yields (base URL, server pid), the server listening on ``host`` (any loopback
    address); ``env`` adds to the environment, whose ``FRAMEBROKER_*`` settings are left
    out."""
    port = free_port(host)
    with tempfile.TemporaryDirectory() as data:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBROKER_")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "framebroker",
                "serve",
                "--host",
                host,
                "--port",
                str(port),
                "--data-dir",
                data,
                "--log-level",
                "warning",
                *args,
            ],
            env=environ | (env or {}),
        )
        url = f"http://{host}:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("server exited during start-up")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                time.sleep(0.1)
            yield url, proc.pid
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for_workers(url: str, n: int, timeout_s: float = 60) -> None:
    """Until each of the ``n`` workers has answered a request: a worker still starting
    accepts no connections, and a row begun then would load the others alone."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{n} workers did not all answer within {timeout_s} s: {seen}")
        with httpx.Client(timeout=10) as fresh:  # a new connection: any worker may take it
            sid = fresh.post(f"{url}/v1/sessions").raise_for_status().json()["id"]
            fresh.delete(f"{url}/v1/sessions/{sid}").raise_for_status()
        if found := WORKER_NODE.search(sid):
            seen.add(found.group(1))
        else:
            raise RuntimeError(f"a session id that names no worker: {sid}")
