"""Output files: checked before any work, written atomically after it.

`check_output_file` and `check_output_folder` refuse, before a registration starts, an output that could
not be written or that would replace an input. `write_atomically` writes through a private folder beside
the output, flushes it to disk, verifies it by reading it back, then renames it into place: on any failure
nothing is left at the output path (an earlier file there stays as it was)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, OutputError

MIN_FREE_BYTES = 1 << 20  # a folder on a device with less free space is refused before any work


def _check_folder_usable(folder: Path, option: str) -> None:
    """The nearest existing folder at or above `folder` is writable and its device is not full."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{option}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option}: the folder {existing} is not writable")
    stats = os.statvfs(existing)
    if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        raise InputError(f"{option}: no space left on the device of {existing}")


def check_output_file(path, option: str, suffixes: tuple[str, ...]) -> Path:
    """`path` as an output file: a supported suffix, not a folder or device, in a usable folder (that it is no
    input is the output plan's check: core.output_plan)."""
    path = Path(path)
    if not path.name.lower().endswith(suffixes):
        raise InputError(f"{option} {path.name}: unsupported file type (use {', '.join(suffixes)})")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder: give a file name")
    if path.exists() and not Path(os.path.realpath(path)).is_file():
        raise InputError(f"{option} {path} is not a regular file ({os.path.realpath(path)})")
    _check_folder_usable(path.parent, option)
    return path


def check_output_folder(path, option: str) -> Path:
    """`path` as an output folder: not a file, creatable and writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder")
    _check_folder_usable(path, option)
    return path


def _fsync(path: Path, directory: bool = False) -> None:
    descriptor = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(descriptor)
    except OSError:
        if not directory:  # some file systems cannot sync folders; files must reach the disk
            raise
    finally:
        os.close(descriptor)


@contextmanager
def native_stderr_held() -> Iterator[list[str]]:
    """Hold what C/C++ libraries print to the process's stderr inside the block (HDF5 prints 50 lines when a
    disk is full); the list yielded receives it. The caller decides: print it, or replace it by one line."""
    held: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held.append(sink.read().decode(errors="replace"))


def _device_full(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def _reason(error: BaseException, folder: Path | None = None) -> str:
    if folder is not None and _device_full(folder):
        return "no space left on the device"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _staging_folder(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_reason(error)}") from error


def write_atomically(path, write: Callable[[Path], object], verify: Callable[[Path], object] | None = None) -> Path:
    """Call `write(temporary)` (same file name, private folder beside `path`), sync, `verify(temporary)`, then
    rename it to `path`. OutputError, with nothing at `path`, when any step fails; a cancel (an exception
    that is not an Exception) also leaves nothing."""
    path = Path(path)
    staging = _staging_folder(path)
    try:
        temporary = staging / path.name
        write(temporary)
        if not temporary.is_file() or temporary.stat().st_size == 0:
            raise OSError(f"nothing was written to {path.name}")
        _fsync(temporary)
        if verify is not None:
            verify(temporary)
        os.replace(temporary, path)
        _fsync(path.parent, directory=True)
    except OutputError:
        raise
    except Exception as error:  # OSError, ITK's RuntimeError, or an InputError from reading the file back
        raise OutputError(f"cannot write {path}: {_reason(error, path.parent)}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_text_atomically(path, text: str) -> Path:
    """A text file (UTF-8) written atomically and compared with `text` after the write."""
    data = text.encode("utf-8")

    def verify(temporary: Path) -> None:
        if temporary.read_bytes() != data:
            raise OutputError(f"cannot write {path}: the file read back differs (disk full?)")

    return write_atomically(path, lambda temporary: temporary.write_bytes(data), verify)


def write_folder_atomically(folder, write: Callable[[Path], object]) -> Path:
    """Call `write(staging)` on a private folder beside `folder`, sync its files, then move each into `folder`
    by an atomic rename: every file in `folder` is whole. OutputError when writing fails (nothing moved)."""
    folder = Path(folder)
    staging = _staging_folder(folder)
    try:
        write(staging)
        files = sorted(item for item in staging.iterdir() if item.is_file())
        for item in files:
            _fsync(item)
        folder.mkdir(parents=True, exist_ok=True)
        for item in files:
            os.replace(item, folder / item.name)
        _fsync(folder, directory=True)
    except OutputError:
        raise
    except Exception as error:
        raise OutputError(f"cannot write {folder}: {_reason(error)}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
