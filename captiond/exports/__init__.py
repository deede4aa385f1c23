"""Exports of a stored session: subtitles (SRT, WebVTT), Markdown minutes and JSON.

::

    cues.py      transcript lines -> subtitle cues within broadcast limits, and their QC  [pure]
    subtitles.py cues -> SRT / WebVTT text                                               [pure]
    actions.py   decisions and action items found in the transcript                      [pure]
    minutes.py   Markdown minutes from a Jinja2 template (user-overridable)
    document.py  a session read from the store, and the JSON export
    files.py     atomic file writes (temporary file + rename)
    live.py      .srt/.vtt files kept up to date from the caption feed while a session runs
"""
