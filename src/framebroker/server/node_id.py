"""Who this server is to a shared store: the owner id of the sessions it runs.

The id must stay the same across restarts of one server (so that a start ends the sessions
its previous life left, and only those) and differ between servers on one database. It is
``node_id`` from the settings, else one made at the data directory's first start and kept in
``data_dir/node_id``: one server per data directory, as the default SQLite store already
requires.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Final

from ..config import Settings
from ..errors import ConfigError

__all__ = ["node_id"]

FILE_NAME: Final = "node_id"
_VALID: Final = re.compile(r"[A-Za-z0-9._:-]{1,255}")


def node_id(settings: Settings) -> str:
    """``settings.node_id``, else the id kept in the data directory (made if missing).

    Raises :class:`~framebroker.errors.ConfigError` when the kept file holds no valid id or
    cannot be written.
    """
    if settings.node_id:
        return settings.node_id
    path = settings.data_dir / FILE_NAME
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return _make(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not _VALID.fullmatch(kept):
        raise ConfigError(
            f"{path} holds {kept[:40]!r}, not a node id (letters, digits, . _ : -); "
            "delete it to make a new one, or set node_id"
        )
    return kept


def _make(path: Path) -> str:
    host = re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname())[:64].strip("-") or "node"
    made = f"{host}-{secrets.token_hex(4)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".node_id-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(made + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot keep this server's node id in {path}: {exc}") from None
    return made
