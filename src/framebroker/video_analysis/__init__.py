"""Video analysis, in one place: frames from a client gathered into video windows, each window
(or an uploaded video) fanned out to HTTP analysis services and in-process pipelines.

- :mod:`.service`: :class:`~.service.VideoAnalysis`, what the Socket.IO and HTTP transports
  talk to; built from the ``[analysis]`` settings;
- :mod:`.session_ids`: the ids handed out by ``GET /get_session_id``, signed;
- :mod:`.streams`: one connected client's frames and windows;
- :mod:`.windows`: frames encoded into MP4 windows in memory;
- :mod:`.fanout`: a window or an upload sent to every service and pipeline, answers merged.

It reaches sessions only through :class:`framebroker.sessions.Sessions`.
"""
