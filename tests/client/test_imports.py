"""The clients import without the server's heavy dependencies: a user's process that only
talks to a server need not install or load onnxruntime, aiortc or numba."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ("onnxruntime", "aiortc", "numba", "av", "fastapi", "uvicorn", "sqlalchemy")


def run(code: str) -> subprocess.CompletedProcess[str]:
    blocker = "".join(f"sys.modules[{name!r}] = None\n" for name in BLOCKED)
    script = "import sys\n" + blocker + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_clients_import_with_the_heavy_modules_blocked() -> None:
    done = run(
        """
        from framebroker.client import (
            FramesClient, LiveClient, TrackingClient, VideoAnalysisClient, AsyncTrackingClient,
            SyncLiveClient, SyncVideoAnalysisClient,
        )
        import framebroker.client.errors
        loaded = sorted(m for m in {"onnxruntime", "aiortc", "numba", "av"} if sys.modules.get(m))
        print("loaded:", loaded)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded: []"


def test_the_webrtc_client_says_it_needs_the_extra() -> None:
    done = run(
        """
        import framebroker.client as client
        for name in ("WebRTCClient", "SyncWebRTCClient"):
            try:
                getattr(client, name)
            except ImportError as exc:
                print("ImportError")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ImportError", "ImportError"]
