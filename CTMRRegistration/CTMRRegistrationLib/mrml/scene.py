"""One MRML scene with the module logics the library needs, the same inside Slicer and headless.

Inside the Slicer application the scene and logics are the application's own. Headless, the
`slicer-core` wheel provides the same classes; they are wired to a vtkSlicerApplicationLogic the way
the application wires them (Volumes needs Colors, CropVolume needs Volumes).
"""

from __future__ import annotations

from dataclasses import dataclass

import slicer
from vtkmodules.vtkCommonCore import vtkLogger, vtkOutputWindow, vtkStringOutputWindow

from ..core.resources import running_in_slicer


@dataclass
class MRMLContext:
    """A scene and the logics that act on it."""

    scene: slicer.vtkMRMLScene
    application_logic: object
    colors: object
    volumes: object
    markups: object
    transforms: object
    segmentations: object
    crop_volume: object


def _slicer_application_context() -> MRMLContext:
    modules = slicer.modules
    return MRMLContext(
        scene=slicer.mrmlScene,
        application_logic=slicer.app.applicationLogic(),
        colors=modules.colors.logic(),
        volumes=modules.volumes.logic(),
        markups=modules.markups.logic(),
        transforms=modules.transforms.logic(),
        segmentations=modules.segmentations.logic(),
        crop_volume=modules.cropvolume.logic(),
    )


def _quiet_vtk_output() -> vtkStringOutputWindow:
    """Collect VTK/MRML messages in a string instead of printing them; errors are raised by us."""
    window = vtkStringOutputWindow()
    vtkOutputWindow.SetInstance(window)
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)
    return window


_OUTPUT_WINDOW: vtkStringOutputWindow | None = None
_MESSAGES_READ = 0


def vtk_messages() -> str:
    """Messages VTK/MRML logged headless since the last call (used to explain a failed read)."""
    global _MESSAGES_READ
    if _OUTPUT_WINDOW is None:
        return ""
    text = _OUTPUT_WINDOW.GetOutput() or ""
    new, _MESSAGES_READ = text[_MESSAGES_READ:], len(text)
    return new


def create_headless_context() -> MRMLContext:
    """A new scene with Colors, Volumes, Markups, Transforms, Segmentations and CropVolume logics."""
    global _OUTPUT_WINDOW
    if _OUTPUT_WINDOW is None:
        _OUTPUT_WINDOW = _quiet_vtk_output()
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)

    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app_logic)
    colors.SetMRMLScene(scene)
    app_logic.SetColorLogic(colors)
    logics = {"Colors": colors}
    for name, cls in (
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Markups", slicer.vtkSlicerMarkupsLogic),
        ("Transforms", slicer.vtkSlicerTransformLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("CropVolume", slicer.vtkSlicerCropVolumeLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        logics[name] = logic
    for name, logic in logics.items():
        app_logic.SetModuleLogic(name, logic)
    vtk_messages()
    return MRMLContext(
        scene=scene,
        application_logic=app_logic,
        colors=colors,
        volumes=logics["Volumes"],
        markups=logics["Markups"],
        transforms=logics["Transforms"],
        segmentations=logics["Segmentations"],
        crop_volume=logics["CropVolume"],
    )


def default_context() -> MRMLContext:
    """The application's scene inside Slicer; headless, a new scene each call."""
    return _slicer_application_context() if running_in_slicer() else create_headless_context()
