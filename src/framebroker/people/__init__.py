"""The people counter, in one place: a video source read by the server, counted live.

- :mod:`.config`: its settings (``[people]`` and ``[live]`` in the TOML file);
- :mod:`.pipeline`: the processors a source runs (detect, track, count lines, traffic
  events, faces, annotate), built from those settings and resuming the day's totals;
- :mod:`.feed`: one ``--source``: the reader thread, its session, its live feed;
- :mod:`.live`: what a source's results become: pushed frames, stats and events, and the
  counts, events and faces stored before anyone is shown them;
- :mod:`.records`: what the counter keeps (counts, events, the face index) and where face
  crops live, as protocols; SQL and files implement them in :mod:`framebroker.storage`.

The processors themselves are library code anyone can use on frames
(:mod:`framebroker.processors.line_counter`, ``traffic_events``, ``face_gallery``), and the
WebSocket that serves listeners is a transport (:mod:`framebroker.transports.people_ws`).

Nothing is imported here, so :mod:`framebroker.config` can read :mod:`.config` without
pulling in the runtime.
"""
