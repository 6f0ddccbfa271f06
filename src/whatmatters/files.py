"""Small file helpers shared by every writer (scores, records, tables, figures); no torch here."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file, fsync and rename, so a crash never leaves a half-written file.

    The data reach the disk before the rename (a node that dies right after still has the whole file, not
    an empty one); a failed write (a full disk, a signal) removes the temporary file and raises an OSError
    that names `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            raise type(err)(err.errno, err.strerror, str(path)) from err
        raise


@contextmanager
def atomic_folder(target: Path, replace: bool = True) -> Iterator[Path]:
    """A temporary sibling folder to fill, renamed to `target` when the block ends without error, so an
    interrupted write never leaves a half folder. `replace=False` is for caches of fixed content: when
    another writer got there first, its folder stays and this one is discarded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        if replace and target.exists():
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if replace or not target.is_dir():
                raise
            shutil.rmtree(tmp)  # the other writer's folder holds the same content
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
