"""The ``framebroker`` command.

``serve`` takes the tracking API's spellings (``--ssl_certfile``, ``--max_workers``) and their
kebab-case twins; every flag left out falls back to the environment, then the config file,
then the built-in default. ``extract-frames`` replays a video into a frame server (see
:mod:`framebroker.tools.extract_frames`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import __version__
from .client.errors import ClientError
from .errors import ConfigError, FramebrokerError

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["main", "settings_from_args"]

_T = TypeVar("_T")


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the server: every API on one port",
        description="Run framebroker, every API on one port: the tracking API (boxes in, "
        "tracks out; /v1/sessions and POST /), the live people counter (WebSocket /ws/live, "
        "on the video sources given with --source), the frame server for plugins "
        "(multipart POST /, running --processor), video analysis over Socket.IO "
        "(/socket.io, POST /batch) and the WebRTC model broker (/webrtc/ws, POST /offer, "
        "running --model). The web console is at /ui/.",
        argument_default=argparse.SUPPRESS,
    )
    _server_flags(p)


def _server_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of ``serve``; ``demo`` takes them all too."""
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
    p.add_argument(
        "--workers",
        type=_checked(_worker_count),
        metavar="N|auto",
        help="run N server processes under one supervisor, sharing every port ('auto': "
        "one per core); each is a node of a cluster on a private redis-server, or on "
        "--cluster (default: one process)",
    )
    p.add_argument(
        "--data-dir",
        "--data_dir",
        dest="data_dir",
        type=Path,
        help="SQLite database and face crops (default ./data); one server per directory",
    )
    p.add_argument(
        "--database-url",
        "--database_url",
        dest="database_url",
        help="SQLAlchemy URL (default: SQLite in the data directory); postgresql://... for a "
        "database several servers share",
    )
    p.add_argument(
        "--migrate",
        action="store_true",
        help="upgrade a database made by an older framebroker before serving",
    )
    p.add_argument(
        "--node-id",
        dest="node_id",
        help="this server to a shared database (default: kept in the data directory)",
    )
    p.add_argument(
        "--cluster",
        dest="cluster_url",
        metavar="redis://HOST:PORT/DB",
        help="join the cluster of nodes sharing this Redis (needs a PostgreSQL "
        "--database-url and a SECRET_KEY shared by every node)",
    )
    p.add_argument(
        "--relay-port",
        dest="cluster_relay_port",
        type=int,
        metavar="PORT",
        help="port other nodes of the cluster relay requests to this one on (default: any)",
    )
    p.add_argument(
        "--advertise",
        dest="cluster_address",
        metavar="ADDRESS",
        help="address other nodes reach this one at (default: --host)",
    )
    p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        dest="log_format",
        choices=["text", "json"],
        help="text lines, or one JSON object per line (default text); each names its session",
    )
    p.add_argument(
        "--app-dir",
        dest="app_dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="look for --processor and --model modules (module:attr) in DIR first, as "
        "uvicorn's --app-dir does (default: the current directory)",
    )
    _source_flags(p)
    _webrtc_flags(p)


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
        "--compat",
        action="store_true",
        help="also listen on each API's original port: the live people counter "
        "(people_ws 8765), the frame server for plugins (frames 5000), the WebRTC model "
        "broker's offers (webrtc_http 8083) and signaling (webrtc_ws 8084)",
    )
    p.add_argument(
        "--compat-port",
        dest="compat_port",
        action="append",
        metavar="NAME=PORT",
        help="move a compatibility listener, e.g. people_ws=9765 or frames=5001",
    )
    p.add_argument(
        "--processor",
        dest="processors",
        action="append",
        metavar="NAME|MODULE:ATTR",
        help="processor run on each frame posted to the frame server "
        "(multipart POST /); repeatable, in order",
    )


def _demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="serve the people counter on the bundled clip",
        description="Serve framebroker with the live people counter running on a bundled "
        "clip of pedestrians (looped, in real time), besides any --source given: open "
        "http://HOST:PORT/ui/live.html (the start-up log prints the address) to watch it "
        "count, or listen on ws://HOST:PORT/ws/live. Takes every option of serve, and every "
        "other API is served as by 'serve'.",
        argument_default=argparse.SUPPRESS,
    )
    _server_flags(p)


def _webrtc_flags(p: argparse.ArgumentParser) -> None:
    """The WebRTC model broker's flags (its ``main.py``), and where its ``MODELS`` list goes."""
    p.add_argument(
        "--model",
        dest="webrtc_models",
        action="append",
        metavar="NAME|MODULE:ATTR",
        help="model run on each WebRTC stream (the WebRTC model broker's MODELS); "
        "repeatable, in merge order: later keys win (default: the heart-rate model)",
    )
    p.add_argument(
        "--websocket-only",
        dest="webrtc_websocket_only",
        action="store_true",
        help="WebRTC signaling over the WebSocket only: no HTTP POST /offer",
    )
    p.add_argument(
        "--record-to",
        dest="webrtc_record_to",
        type=Path,
        metavar="DIR",
        help="write each incoming WebRTC stream to DIR/SESSION_ID.mp4",
    )
    p.add_argument("--cert-file", dest="cert_file", type=Path, help="HTTPS/WSS certificate")
    p.add_argument("--key-file", dest="key_file", type=Path, help="its private key")
    p.add_argument(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const="debug",
        help="debug logging (same as --log-level debug)",
    )


def _webrtc_overrides(flags: dict[str, object]) -> None:
    """Turn the flags of :func:`_webrtc_flags` into settings, in place."""
    webrtc = {}
    for key in ("models", "websocket_only", "record_to"):
        value = flags.pop(f"webrtc_{key}", None)
        if value is not None:
            webrtc[key] = value
    if webrtc:
        flags["webrtc"] = webrtc
    cert, keyfile = flags.pop("cert_file", None), flags.pop("key_file", None)
    if cert is not None:
        flags["ssl_certfile"] = cert
    if keyfile is not None:
        flags["ssl_keyfile"] = keyfile
    if cert is not None or keyfile is not None:
        flags.setdefault("ssl", True)  # the original API's cert and key alone turn HTTPS on


def _cluster_overrides(flags: dict[str, object]) -> None:
    """Turn ``--cluster``, ``--relay-port`` and ``--advertise`` into ``cluster`` settings."""
    cluster = {}
    for key in ("url", "relay_port", "address"):
        value = flags.pop(f"cluster_{key}", None)
        if value is not None:
            cluster[key] = value
    if cluster:
        flags["cluster"] = cluster


def _checked(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """``parse`` as an argparse ``type``: its ``ValueError`` message becomes the usage error."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"expected a number of seconds, 0 or more, got {text!r}")
    return value


def _worker_count(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"expected a number of processes from 1 to 256, or auto, got {text!r}")
    return int(text)


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise ValueError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _extract_frames_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .tools.extract_frames import parse_fps, parse_header, parse_size, parse_start_time

    p = sub.add_parser(
        "extract-frames",
        help="replay a video file into a frame server, one POST per frame",
        description="Decode SOURCE, sample it at --fps on the video's clock, and POST each "
        "frame to DESTINATION as multipart/form-data: 'image' (raw BGR, 1920x1080 unless "
        "--size) and 'frame' (JSON: timestamp, timestamp_str, relative_timestamp_str, "
        "relative_timestamp, frame_no, source), over one kept-alive connection. Exit "
        "status: 0 all frames answered 200, 1 a frame was refused, 2 the source, the "
        "destination or --out cannot be used.",
    )
    p.add_argument("source", help="video source to extract frames from (file or stream URL)")
    p.add_argument("destination", help="http:// or https:// endpoint to POST frames to")
    p.add_argument(
        "--fps",
        "-r",
        type=_checked(parse_fps),
        default=1.0,
        metavar="FPS",
        help="frames per second of video to extract (can be decimal; 'all' for every "
        "frame; default 1)",
    )
    p.add_argument(
        "--seek",
        "-s",
        dest="seek_s",
        type=_checked(_seconds),
        default=0.0,
        metavar="SECONDS",
        help="seek time in seconds to seek into input before starting",
    )
    p.add_argument(
        "--size",
        type=_checked(parse_size),
        default=(1920, 1080),
        metavar="WxH",
        help="size of the images sent (default 1920x1080)",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="post each frame at its time on the video clock instead of as fast as it decodes",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="go on after a frame is refused (the exit status is still 1)",
    )
    p.add_argument(
        "--out", metavar="FILE", help="write each reply as a line of JSON to FILE ('-': stdout)"
    )
    p.add_argument(
        "--header",
        "-H",
        dest="headers",
        action="append",
        type=_checked(parse_header),
        default=[],
        metavar="NAME:VALUE",
        help="add this header to every request (repeatable)",
    )
    p.add_argument(
        "--start-time",
        type=_checked(parse_start_time),
        default="auto",
        metavar="WHEN",
        help="what 'timestamp' counts from: auto (the file's creation time if it records "
        "one, else now), now, seconds since 1970, or an ISO 8601 time",
    )
    p.add_argument(
        "--timeout",
        dest="timeout_s",
        type=_checked(_positive_seconds),
        default=30.0,
        metavar="SECONDS",
        help="give up on a connection or reply after this long (default 30)",
    )
    p.add_argument("--cafile", metavar="PEM", help="trust the CA certificates in this file")
    p.add_argument(
        "--insecure", "-k", action="store_true", help="do not verify the HTTPS certificate"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")


def _stream_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stream",
        help="stream a video file to a WebRTC server as a camera; print its predictions",
        description="the WebRTC model broker's mock client: play VIDEO in real time as a "
        "WebRTC camera track to the server at URL, print each message the server sends "
        "(predictions, then the final result) as a line of JSON, and ask for the result "
        "when the video ends. Exit status: 0 done, 1 the connection failed or the server "
        "reported an error, 2 the video, the URL or the offer was refused.",
    )
    p.add_argument("video", help="video file (or rtsp:// URL or camera device)")
    p.add_argument(
        "url",
        help="WebSocket signaling URL (ws://HOST:8000/webrtc/ws, or the original API's ws://HOST:8084);"
        " with --use-http the offer URL (http://HOST:8000/offer or http://HOST:8083)",
    )
    p.add_argument("--use-http", action="store_true", help="HTTP POST signaling")
    p.add_argument("--loop", action="store_true", help="start the video over when it ends")
    p.add_argument(
        "--timeout",
        dest="timeout_s",
        type=_checked(_positive_seconds),
        default=30.0,
        metavar="SECONDS",
        help="give up connecting, or waiting for the result, after this long (default 30)",
    )
    p.add_argument(
        "--insecure", "-k", action="store_true", help="do not verify the TLS certificate"
    )


def _db_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "db",
        help="show or upgrade the database's schema",
        description="The store's schema: 'current' says which revision the database is at, "
        "'upgrade' brings it to the newest this framebroker knows (back it up first). The "
        "database is the one serve would use: --database-url, else the SQLite file in the "
        "data directory.",
    )
    p.add_argument("action", choices=["current", "upgrade"])
    p.add_argument("--config", type=Path, help="TOML settings file", default=argparse.SUPPRESS)
    p.add_argument(
        "--data-dir", "--data_dir", dest="data_dir", type=Path, default=argparse.SUPPRESS
    )
    p.add_argument(
        "--database-url", "--database_url", dest="database_url", default=argparse.SUPPRESS
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framebroker", description="Real-time vision stream server."
    )
    parser.add_argument("--version", action="version", version=f"framebroker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _demo_parser(sub)
    _extract_frames_parser(sub)
    _stream_parser(sub)
    _db_parser(sub)
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


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings ``serve``/``demo`` run with: flags over env over the config file."""
    from .config import load_settings

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "app_dir")}
    flags["compat_ports"] = _compat_ports(flags.pop("compat_port", None))
    processors = flags.pop("processors", None)
    if processors:
        flags["frames"] = {"pipeline": processors}
    _webrtc_overrides(flags)
    _cluster_overrides(flags)
    if args.command == "demo":
        from .media.sources import demo_clip

        flags["sources"] = [f"demo={demo_clip()}", *(flags.get("sources") or ())]
        flags["loop"] = True
    return load_settings(getattr(args, "config", None), **flags)


def _run_serve(args: argparse.Namespace) -> int:
    from .logs import configure_logging
    from .server.uvicorn_hooks import check_uvicorn

    # Before anything is loaded by module:attr: a user's myproc.py in the working directory
    # loads however framebroker was started (an installed script does not put it on the path).
    sys.path.insert(0, str(args.app_dir.resolve()))
    settings = settings_from_args(args)
    # Before importing the modules that subclass uvicorn's, so that a uvicorn which moved one
    # of its classes gets the same one-line refusal as one that renamed a method.
    check_uvicorn()
    from .server.serve import run_serve

    configure_logging(settings.log_level, settings.log_format)
    if settings.worker_count is not None:
        from .server.supervisor import run_supervisor

        return run_supervisor(settings, app_dir=args.app_dir.resolve())
    with contextlib.suppress(KeyboardInterrupt):
        run_serve(settings)
    return 0


def _run_db(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .storage import database_url, head, inspect_database, upgrade_database

    settings = load_settings(
        getattr(args, "config", None),
        data_dir=getattr(args, "data_dir", None),
        database_url=getattr(args, "database_url", None),
    )
    url = settings.sqlalchemy_url
    shown = database_url(url).render_as_string(hide_password=True)
    if args.action == "upgrade":
        before, after = upgrade_database(url)
        if before.status == "current":
            print(f"{shown}: already at {after}, the newest")
        else:
            print(f"{shown}: upgraded from {before.describe()} to {after}")
        return 0
    state = inspect_database(url)
    notes = {
        "current": "the newest",
        "older": f"older than {head()}: run `framebroker db upgrade`",
        "newer": f"newer than {head()}, the newest this framebroker knows",
        "empty": f"made at {head()} when the server starts",
    }
    print(f"{shown}: {state.describe()} ({notes[state.status]})")
    return 0


def _run_extract_frames(args: argparse.Namespace) -> int:
    from .tools.extract_frames import ExtractOptions, run

    options = ExtractOptions(
        source=args.source,
        destination=args.destination,
        fps=args.fps,
        seek_s=args.seek_s,
        size=args.size,
        realtime=args.realtime,
        keep_going=args.keep_going,
        out=args.out,
        headers=tuple(args.headers),
        start_time=args.start_time,
        timeout_s=args.timeout_s,
        cafile=args.cafile,
        insecure=args.insecure,
        quiet=args.quiet,
    )
    return _interruptible(run, options)


def _interruptible(run: Callable[[_T], int], options: _T) -> int:
    """A client tool's run: Ctrl-C ends it with the shell's 130, without a traceback."""
    try:
        return run(options)
    except KeyboardInterrupt:
        print("framebroker: interrupted", file=sys.stderr)
        return 130


def _run_stream(args: argparse.Namespace) -> int:
    from .tools.stream import StreamOptions, run

    options = StreamOptions(
        video=args.video,
        url=args.url,
        use_http=args.use_http,
        loop=args.loop,
        timeout_s=args.timeout_s,
        insecure=args.insecure,
    )
    return _interruptible(run, options)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("serve", "demo"):
            return _run_serve(args)
        if args.command == "extract-frames":
            return _run_extract_frames(args)
        if args.command == "stream":
            return _run_stream(args)
        if args.command == "db":
            return _run_db(args)
    except (FramebrokerError, ClientError) as exc:
        print(f"framebroker: {exc.message}", file=sys.stderr)
        return 2
    return 1
