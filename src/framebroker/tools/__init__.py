"""Command-line tools that feed framebroker, or any server speaking the same protocol.

- :mod:`.extract_frames`: ``framebroker extract-frames``, replay a video file as frames
  POSTed one by one (the frame server's plugin rig), through
  :class:`framebroker.client.FramesClient`.
- :mod:`.stream`: ``framebroker stream``, a video file played as a WebRTC camera, through
  :class:`framebroker.client.WebRTCClient`.
"""

from __future__ import annotations

__all__: list[str] = []
