"""The supervisor's private redis-server: on a Unix socket of its own, gone when closed, and a
one-line refusal where redis-server is not installed."""

from __future__ import annotations

import pytest
from redis import Redis

from framebroker.errors import ConfigError
from framebroker.server import private_redis
from framebroker.server.private_redis import PrivateRedis, redis_server_binary


def test_a_missing_redis_server_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(private_redis, "_FALLBACKS", ())
    with pytest.raises(ConfigError) as err:
        redis_server_binary()
    assert "apt-get install redis-server" in err.value.message
    assert "--cluster" in err.value.message
    assert "\n" not in err.value.message


def test_it_answers_on_its_socket_and_is_gone_when_closed() -> None:
    redis = PrivateRedis(redis_server_binary())
    with redis:
        redis.start()
        assert redis.alive
        assert redis.url.startswith("unix://")
        client = Redis.from_url(redis.url)
        try:
            client.set("k", "v")
            assert client.get("k") == b"v"
        finally:
            client.close()
        assert (redis.socket_path.stat().st_mode & 0o777) == 0o700
    assert not redis.alive
    assert not redis.directory.exists()
