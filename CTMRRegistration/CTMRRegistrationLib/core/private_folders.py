"""Private temporary folders for copies of the user's images (possibly patient data): owner-only, named after
the process that made them, removed on every exit but SIGKILL, and those of dead runs removed at the next start."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "ctmr-"
_NAME = re.compile(rf"^{PREFIX}[a-z]+-(\d+)-")


@contextmanager
def private_folder(kind: str) -> Iterator[Path]:
    """A new folder only its owner can read (mode 0700), removed when the block ends however it ends."""
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{kind}-{os.getpid()}-") as folder:
        yield Path(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_folders(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove this user's private folders whose process is gone (a run killed by SIGKILL); the folders removed."""
    removed = []
    root = Path(root or tempfile.gettempdir())
    for folder in root.glob(f"{PREFIX}*-*-*"):
        match = _NAME.match(folder.name)
        try:
            mine = folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == os.getuid()
        except OSError:
            continue
        if match and mine and not _alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
