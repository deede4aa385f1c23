"""Caption outputs: the captions where the viewers are.

Each output consumes the same caption feed as the overlay and the live subtitle files
(:mod:`captiond.feed`) and sends it on over a documented transport:

    obs       OBS Studio's stream captions (CEA-608) through obs-websocket v5's
              SendStreamCaption: roll-up rows of at most 32 characters
    youtube   YouTube Live's HTTP caption ingestion URL (POST, ``seq``, timestamped cues)
    zoom      a Zoom meeting's caption URL (API token): POST, ``seq``, ``lang``
    webhook   a JSON POST per final line, optionally HMAC-signed

Layout: :mod:`~captiond.outputs.spec` (the ``[[outputs]]`` tables and ``--output`` flags,
pure), :mod:`~captiond.outputs.core` (what to send, pure: no I/O, no clock),
:mod:`~captiond.outputs.drivers` (the I/O and the task per output) and
:mod:`~captiond.outputs.service` (the daemon service; reload adds and removes outputs).
"""
