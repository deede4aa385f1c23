"""Writing export files so that a reader never sees half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from captiond.errors import CaptiondError


class ExportWriteError(CaptiondError):
    pass


def atomic_write(path: Path, chunks: Iterable[str] | Iterable[bytes], *, fsync: bool = True,
                 mode: int = 0o644) -> int:
    """Write text (or bytes) to a temporary file beside ``path`` and rename it over ``path``.

    Readers see the old file or the new one, never a mix. Returns the characters (bytes)
    written.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ExportWriteError(
            f"cannot write in {directory}: {exc.strerror} (check the folder and its permissions)"
        ) from exc
    written = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
                fh.write(data)
                written += len(chunk)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ExportWriteError(
                f"cannot write {path}: {exc.strerror} (check free space and permissions)"
            ) from exc
        raise
    return written
