"""Input paths checked ahead of reading: a regular file (not a device, pipe, folder or link loop) and, for text
inputs, a size bound, so that no input is read without end."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputError

TEXT_LIMIT_BYTES = 64 << 20  # parameter files, markups, transforms and manifests are far smaller


def existing_path(path, kind: str) -> Path:
    """`path` when something is there; InputError naming `kind` when nothing is, or a link loops."""
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError as error:
        raise InputError(f"{kind} not found: {path}") from error
    except OSError as error:
        raise InputError(f"{kind} {path}: {error.strerror}") from error
    return path


def regular_file(path, kind: str, limit_bytes: int | None = None) -> Path:
    """`path` when it is a regular file (of at most `limit_bytes`); else InputError saying what it is."""
    path = existing_path(path, f"{kind} file")
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise InputError(f"{kind} file {path} is a folder")
    if not stat.S_ISREG(mode):
        raise InputError(f"{kind} file {path} is not a regular file (a device, pipe or socket)")
    size = os.stat(path).st_size
    if limit_bytes is not None and size > limit_bytes:
        raise InputError(f"{kind} file {path} is {size >> 20} MiB: more than the {limit_bytes >> 20} MiB a "
                         f"{kind} file can be")
    return path


def read_text(path, kind: str, limit_bytes: int = TEXT_LIMIT_BYTES) -> str:
    """The text of a regular file of at most `limit_bytes` (UTF-8); InputError when it is not one."""
    path = regular_file(path, kind, limit_bytes)
    try:
        with path.open("rb") as stream:
            data = stream.read(limit_bytes + 1)
    except OSError as error:
        raise InputError(f"cannot read {kind} file {path}: {error.strerror}") from error
    if len(data) > limit_bytes:
        raise InputError(f"{kind} file {path} is larger than {limit_bytes >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path.name} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind} file (not text)") from error
