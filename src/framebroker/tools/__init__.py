"""Command-line tools that feed framebroker, or any server speaking the same protocol.

- :mod:`.extract_frames`: ``framebroker extract-frames``, replay a video file as frames
  POSTed one by one (seed 003's plugin rig), through :class:`framebroker.client.FramesClient`.
- :mod:`.stream`: ``framebroker stream``, a video file played as a WebRTC camera.
"""

from __future__ import annotations

__all__: list[str] = []
