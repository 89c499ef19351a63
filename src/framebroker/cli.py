"""The ``framebroker`` command.

``serve`` takes the seed-000 spellings (``--ssl_certfile``, ``--max_workers``) and their
kebab-case twins; every flag left out falls back to the environment, then the config file,
then the built-in default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import ConfigError, FramebrokerError

__all__ = ["main"]


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the server",
        description="Run framebroker: every transport on one port.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 8000)")
    p.add_argument("--ssl", action="store_true", help="serve HTTPS (needs cert and key)")
    p.add_argument("--ssl_certfile", "--ssl-certfile", dest="ssl_certfile", type=Path)
    p.add_argument("--ssl_keyfile", "--ssl-keyfile", dest="ssl_keyfile", type=Path)
    p.add_argument(
        "--max_workers",
        "--max-workers",
        dest="max_workers",
        type=int,
        help="worker threads for decoding, tracking and drawing (default 4)",
    )
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", type=Path)
    p.add_argument("--database-url", "--database_url", dest="database_url")
    p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    _source_flags(p)


def _source_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        dest="sources",
        action="append",
        metavar="[NAME=]PATH|URL|DEVICE",
        help="run the people counter on a video file, rtsp:// URL or camera (repeatable)",
    )
    p.add_argument(
        "--source-realtime",
        dest="source_realtime",
        action=argparse.BooleanOptionalAction,
        help="pace files at their frame rate (default: on for files)",
    )
    p.add_argument("--loop", action="store_true", help="start files over when they end")
    p.add_argument(
        "--compat", action="store_true", help="also open each seed's own listener (8765)"
    )
    p.add_argument(
        "--compat-port",
        dest="compat_port",
        action="append",
        metavar="NAME=PORT",
        help="move a compatibility listener, e.g. people_ws=9765",
    )


def _demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="serve the people counter on the bundled clip",
        description="Serve framebroker with the people counter running on a bundled clip of "
        "pedestrians (looped, in real time). Watch ws://HOST:PORT/ws/live.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", type=Path)
    p.add_argument("--compat", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framebroker", description="Real-time vision stream server."
    )
    parser.add_argument("--version", action="version", version=f"framebroker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _demo_parser(sub)
    return parser


def _compat_ports(values: list[str] | None) -> dict[str, int] | None:
    if not values:
        return None
    ports: dict[str, int] = {}
    for value in values:
        name, sep, port = value.partition("=")
        if not sep or not port.isdigit():
            raise ConfigError(f"--compat-port: expected NAME=PORT, got {value!r}")
        ports[name] = int(port)
    return ports


def _run_serve(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .server.serve import serve

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    flags["compat_ports"] = _compat_ports(flags.pop("compat_port", None))
    if args.command == "demo":
        from .media.video import demo_clip

        flags["sources"] = [f"demo={demo_clip()}"]
        flags["loop"] = True
    settings = load_settings(getattr(args, "config", None), **flags)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("serve", "demo"):
            return _run_serve(args)
    except FramebrokerError as exc:
        print(f"framebroker: {exc.message}", file=sys.stderr)
        return 2
    return 1
