"""The tests' redis-server: a missing binary is an error saying how to install it (the
cluster tests never skip), and the server really goes down and comes back."""

from __future__ import annotations

import socket

import pytest

from tests.redis_server import RedisServer, RedisServerMissing


def test_a_missing_redis_server_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RedisServerMissing, match=r"install_redis\.sh"):
        RedisServer()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_kill_and_restart_keep_the_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    assert _answers(port)
    redis_server.kill()
    assert not _answers(port)
    redis_server.start()
    assert redis_server.port == port
    assert _answers(port)
