"""The elastix backends behind one small protocol: an elastix executable, or the in-process itk-elastix wheel.

A backend is chosen once per run (`choose_backend`) and passed to everything that runs elastix: the
registration stages, the quality assessment's restarts and the report, which names the one that ran."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from ..core.errors import Cancelled, InputError
from ..core.resources import running_in_slicer
from .executable import EXE_SUFFIX, ElastixExecutable, executable_at, run_elastix_executable
from .parameters import ElastixJob, ParameterMap

BACKENDS = ("auto", "elastix", "itk-elastix")
ELASTIX_ENVIRONMENT_VARIABLE = "CTMR_ELASTIX"


class ElastixBackend(Protocol):
    """What runs elastix: `name` is one of BACKENDS but 'auto'."""

    name: str

    def describe(self) -> str:
        """The program and its version, for reports."""

    def run(self, job: ElastixJob, progress: Callable[[float], None] | None = None,
            cancelled: Callable[[], bool] | None = None) -> list[ParameterMap]:
        """One TransformParameters map per parameter map of `job`; Cancelled when `cancelled()` turns true."""


@dataclass(frozen=True)
class ExecutableBackend:
    """An elastix executable: starts in milliseconds, reports progress per iteration, is killed on cancel."""

    executable: ElastixExecutable
    name: str = "elastix"

    @cached_property
    def version(self) -> str:
        try:
            output = subprocess.run([str(self.executable.path), "--version"], capture_output=True, text=True,
                                    timeout=20, env=self.executable.environment).stdout
        except (OSError, subprocess.SubprocessError):
            return "unknown version"
        return output.strip() or "unknown version"

    def describe(self) -> str:
        return f"{self.version} ({self.executable})"

    def run(self, job, progress=None, cancelled=None) -> list[ParameterMap]:
        return run_elastix_executable(self.executable, job, progress=progress, cancelled=cancelled)


@dataclass(frozen=True)
class WheelBackend:
    """The itk-elastix wheel, in process: progress only at its end, cancelled only before it starts."""

    name: str = "itk-elastix"

    def describe(self) -> str:
        return f"itk-elastix {importlib.metadata.version('itk-elastix')} (Python wheel)"

    def run(self, job, progress=None, cancelled=None) -> list[ParameterMap]:
        if cancelled is not None and cancelled():
            raise Cancelled("registration cancelled")
        from .wheel import run_itk_elastix

        maps = run_itk_elastix(job)
        if progress is not None:
            progress(1.0)
        return maps


def slicer_elastix_executable() -> ElastixExecutable | None:
    """The elastix that the SlicerElastix extension ships, with the environment its logic prepares; None
    outside Slicer or without the extension."""
    if not running_in_slicer():
        return None
    try:
        import Elastix
    except ImportError:
        return None
    logic = Elastix.ElastixLogic()
    try:
        folder = logic.getElastixBinDir()
    except ValueError:
        return None
    return ElastixExecutable(Path(folder) / logic.elastixFilename, logic.getElastixEnv(), origin="SlicerElastix")


def find_elastix_executable(path: str | os.PathLike | None = None) -> ElastixExecutable | None:
    """`path` when given, else $CTMR_ELASTIX, else SlicerElastix's inside Slicer, else `elastix` on PATH."""
    if path:
        return executable_at(path)
    if os.environ.get(ELASTIX_ENVIRONMENT_VARIABLE):
        return executable_at(os.environ[ELASTIX_ENVIRONMENT_VARIABLE], f"${ELASTIX_ENVIRONMENT_VARIABLE}")
    bundled = slicer_elastix_executable()
    if bundled is not None:
        return bundled
    found = shutil.which(f"elastix{EXE_SUFFIX}")
    return ElastixExecutable(Path(found)) if found else None


def choose_backend(backend: str | ElastixBackend = "auto",
                   executable: str | os.PathLike | None = None) -> ElastixBackend:
    """The backend to run elastix with, looked up once (a backend object is returned as it is).

    'auto' prefers an executable (it starts in milliseconds, reports progress per iteration and can be
    cancelled) and falls back to the wheel; 'elastix' and 'itk-elastix' insist, with a clear error."""
    if not isinstance(backend, str):
        return backend
    if backend not in BACKENDS:
        raise InputError(f"unknown elastix backend '{backend}' (use {', '.join(BACKENDS)})")
    if backend != "itk-elastix":
        found = find_elastix_executable(executable)
        if found is not None:
            return ExecutableBackend(found)
        if backend == "elastix":
            raise InputError(
                "no elastix executable found: install elastix (Debian/Ubuntu: apt install elastix), "
                f"pass --elastix PATH or set ${ELASTIX_ENVIRONMENT_VARIABLE}"
            )
    if importlib.util.find_spec("itk") is None:
        raise InputError("neither an elastix executable nor the itk-elastix wheel is available "
                         "(apt install elastix, or pip install itk-elastix)")
    return WheelBackend()
