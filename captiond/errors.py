"""The exceptions captiond raises on purpose. Each message names the problem and the fix.

::

    CaptiondError                   anything the CLI prints as one line and exits non-zero on
     ├── ConfigError                a bad setting: file, key, value and what to write instead
     ├── AudioError                 a source that cannot be opened or read
     │    └── DeviceLost            a capture device vanished mid-run (retryable)
     ├── EngineError                an engine that cannot start or run
     │    └── EngineFatal           no point retrying (bad key, missing model)
     ├── StoreError                 the database cannot be opened, migrated or written
     ├── SessionNotFound            `show 12` for a session that does not exist
     └── InvalidSessionRef          `show 99999999999999999999`: no database holds that id

Foreign exceptions are translated where they enter (``raise AudioError(...) from exc``).
"""

from __future__ import annotations


class CaptiondError(Exception):
    """Base class: ``str(exc)`` is a complete, user-facing sentence."""


class ConfigError(CaptiondError):
    pass


class AudioError(CaptiondError):
    pass


class DeviceLost(AudioError):
    pass


class EngineError(CaptiondError):
    pass


class EngineFatal(EngineError):
    pass


class StoreError(CaptiondError):
    pass


class SessionNotFound(CaptiondError):
    pass


class InvalidSessionRef(CaptiondError):
    """A session reference no database can hold (a number beyond 64 bits): a bad request."""
