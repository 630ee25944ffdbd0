"""The elastix that the SlicerElastix extension ships, when running inside Slicer with it installed."""

from __future__ import annotations

from pathlib import Path

from ..core.resources import running_in_slicer
from .executable import ElastixExecutable


def slicer_elastix_executable() -> ElastixExecutable | None:
    """SlicerElastix's elastix with the environment its logic prepares, or None outside Slicer or without it."""
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
