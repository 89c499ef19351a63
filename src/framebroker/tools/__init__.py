"""Command-line tools that feed framebroker, or any server speaking the same protocol.

- :mod:`.extract_frames`: ``framebroker extract-frames``, replay a video file as frames
  POSTed one by one (the frame server's plugin rig).
- :mod:`.poster`: the multipart frame client it sends with.
"""

from __future__ import annotations

__all__: list[str] = []
