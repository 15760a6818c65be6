"""Whole-file writes that never leave half a file behind.

Models, cards, checkpoints and reports are read by other processes (the daemon, a test, a browser) while
they may be rewritten: each is written to a temporary file in the same directory, flushed to disk and
renamed over the target, so a reader sees the old file or the new one, and a crash leaves the old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _plain_open_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0666 less the umask.

    ``mkstemp`` makes its file 0600; a card or model written through it must still be readable by the
    daemon's own user after deployment."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file and ``os.replace``; creates missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _plain_open_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 text, written as :func:`write_bytes_atomic` writes bytes."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Indented JSON with a final newline, written as :func:`write_bytes_atomic` writes bytes."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that want a file name (an exporter, a converter).

    When the block ends without an exception the file there is renamed over ``path``; otherwise it is
    removed and ``path`` keeps what it held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _plain_open_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
