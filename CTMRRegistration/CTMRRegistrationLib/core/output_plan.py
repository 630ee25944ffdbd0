"""Every path a run will write, planned before any work and checked against every input and against each other.

Paths are compared by where they lead (resolved, so symbolic links count) and, for files that exist, by file
identity (so hard links count). A clash is an InputError naming both options."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError


def _where(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except OSError:
        return path.absolute()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _same(a: Path, b: Path) -> bool:
    return _where(a) == _where(b) or (_identity(a) is not None and _identity(a) == _identity(b))


def _inside(path: Path, folder: Path) -> bool:
    return _where(folder) in _where(path).parents


def check_output_plan(inputs: list[tuple[str, Path]], writes: list[tuple[str, Path]]) -> None:
    """InputError when a planned file is an input, lies inside an input folder, or is planned twice. `inputs`
    and `writes` are (option, path) pairs; a write's option may name a file inside an output folder."""
    for number, (option, path) in enumerate(writes):
        for input_option, given in inputs:
            if _same(path, given):
                raise InputError(f"{option} would overwrite the input {input_option} {given} (choose another path)")
            if Path(given).is_dir() and _inside(path, given):
                raise InputError(f"{option} would write {path} inside the input folder {input_option} {given}")
        for other_option, other in writes[:number]:
            if _same(path, other):
                raise InputError(f"{option} and {other_option} would both write {path}")
