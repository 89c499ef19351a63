"""What ``serve`` checks before it binds a port or opens the store.

Each mistake a user can make on the command line or in the config file is found here and
raised as one :class:`~framebroker.errors.ConfigError` naming the option and the problem (the
command line prints it as one line and exits with 2), instead of surfacing half-way through
the start as a traceback from deep inside a transport.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

from ..config import Settings
from ..core.manager import ProcessorSpec
from ..detectors.nanodet import BUNDLED_MODEL
from ..errors import ConfigError, ProcessorLoadError
from ..media.container import open_source
from ..media.sources import SourceError, parse_source
from ..people.feed import parse_source_arg
from ..plugins import ProcessorRegistry, spec_name
from ..processors.line_counter import parse_lines

__all__ = ["check_startup"]


def check_startup(settings: Settings, registry: ProcessorRegistry) -> None:
    """Raise :class:`ConfigError` for the first thing in ``settings`` that cannot work."""
    _check_tls(settings)
    _check_cluster(settings)
    _check_processors(registry, "--processor", "frames.pipeline", settings.frames.pipeline)
    _check_processors(registry, "--model", "webrtc.models", settings.webrtc.models)
    for name, specs in settings.analysis.pipelines.items():
        _check_processors(registry, None, f"analysis.pipelines.{name}", specs)
    if settings.people.lines is not None:
        # With or without a --source to use them: a mistake found only when a source starts
        # would stop a server that has run fine without one.
        try:
            parse_lines(settings.people.lines)
        except ValueError as exc:
            raise ConfigError(f"people.lines: {exc}") from None
    detector = settings.people.detector
    if settings.sources and detector != BUNDLED_MODEL and not Path(detector).is_file():
        raise ConfigError(
            f"people.detector: expected {BUNDLED_MODEL!r} or an ONNX file, "
            f"no such file {detector!r}"
        )
    for i, arg in enumerate(settings.sources):
        _check_source(arg, i)
    record_to = settings.webrtc.record_to
    if record_to is not None:
        try:  # made now rather than when the first stream comes to be recorded
            Path(record_to).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"--record-to {record_to}: cannot make the folder: {exc.strerror or exc}"
            ) from None


def _check_cluster(settings: Settings) -> None:
    """What every node of a cluster must share is refused at start-up when it cannot be
    shared: one node's SQLite file, or a secret each process would make up for itself."""
    if settings.cluster.url is None:
        return
    url = settings.sqlalchemy_url
    if url.split(":", 1)[0].split("+", 1)[0] != "postgresql":
        shown = url if not settings.database_url else url.split("://", 1)[0] + "://..."
        raise ConfigError(
            f"--cluster needs a database every node shares (--database-url "
            f"postgresql://...), not {shown}: a session moves between nodes with its "
            "snapshot, which only a shared store can hand over"
        )
    if settings.analysis.secret_key is None:
        raise ConfigError(
            "--cluster needs SECRET_KEY (analysis.secret_key) set to the same value on every "
            "node: it authenticates the relay between nodes and signs the session ids "
            "Socket.IO hands out, which any node must accept"
        )
    _check_redis(settings.cluster.url)


def _check_redis(url: str) -> None:
    """The cluster's Redis must answer now: a node that cannot join would serve alone."""
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        raise ConfigError(f"--cluster {url}: its Redis does not answer: {exc}") from None
    finally:
        client.close()


def _check_processors(
    registry: ProcessorRegistry, flag: str | None, setting: str, specs: Sequence[ProcessorSpec]
) -> None:
    for i, spec in enumerate(specs):
        name = spec_name(spec)
        try:
            registry.resolve(name)
            if not isinstance(spec, str):  # a table of options: each one known
                registry.settings(spec)
        except ProcessorLoadError as exc:
            where = f"{flag} {name}" if flag is not None and isinstance(spec, str) else None
            raise ConfigError(f"{where or f'{setting}[{i}]'}: {exc.message}") from None


def _check_source(arg: str, index: int) -> None:
    """A file source must open now; cameras and streams may come up later (they retry)."""
    _, uri = parse_source_arg(arg, index)
    try:
        spec = parse_source(uri)
        if spec.kind != "file":
            return
        open_source(uri).close()
    except SourceError as exc:
        reason = exc.message.partition(": ")[2] if exc.message.startswith("source ") else ""
        reason = reason or exc.message
        raise ConfigError(f"--source {arg}: {reason}") from None


def _check_tls(settings: Settings) -> None:
    if not settings.ssl or settings.ssl_certfile is None or settings.ssl_keyfile is None:
        return
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    for flag, path in (("--ssl-certfile", cert), ("--ssl-keyfile", key)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"--ssl-certfile {cert} / --ssl-keyfile {key}: not a PEM certificate and its "
            f"private key ({getattr(exc, 'reason', None) or exc})"
        ) from None
