"""The Slicer panel without Qt: every action of the module's panel on an MRML scene.

The widget in CTMRRegistration.py only wires Qt to these (buttons, progress bar, message boxes, slice views);
the headless tests drive the same functions with the same arguments on a slicer-core scene. `PanelSettings`
declares the fields of the module's parameter node once, and stands in for it headless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
    vtkMRMLTransformNode,
)
from vtkmodules.vtkCommonCore import vtkStringArray

from ..core.errors import InputError
from ..core.imaging import resample_on_grid
from ..core.masks import MASK_MODES
from ..elastix.backends import BACKENDS
from ..mrml.crop_roi import cropped_volume
from ..mrml.dicom_nodes import export_dicom_registration
from ..mrml.logic import RegistrationLogic
from ..mrml.nodes import add_volume_from_sitk, ijk_to_world_lps, sitk_from_volume, update_volume_from_sitk
from ..mrml.scene_registration import SceneRegistrationResult
from ..qa.pictures import checkerboard
from ..qa.report import REPORT_NAME
from ..qa.verdict import bound_text
from ..registration.pipeline import BIAS_CORRECTIONS, INITIALIZATIONS, CancelledCallback, ProgressCallback


def _choice(default: str, choices: tuple[str, ...]):
    return field(default=default, metadata={"choices": choices})


@dataclass
class PanelSettings:
    """What the panel shows: the one declaration of the module's parameter node (CTMRRegistration.py wraps
    these fields with Slicer's parameterNodeWrapper), and its stand-in headless. Names are the camelCase form
    of RegistrationLogic.register's keywords; the stage check boxes make its `stages`."""

    fixedVolume: vtkMRMLScalarVolumeNode | None = None
    movingVolume: vtkMRMLScalarVolumeNode | None = None
    fixedLandmarks: vtkMRMLMarkupsFiducialNode | None = None
    movingLandmarks: vtkMRMLMarkupsFiducialNode | None = None
    fixedTargets: vtkMRMLMarkupsFiducialNode | None = None
    movingTargets: vtkMRMLMarkupsFiducialNode | None = None
    fixedSegmentation: vtkMRMLSegmentationNode | None = None
    movingSegmentation: vtkMRMLSegmentationNode | None = None
    rigidStage: bool = True
    affineStage: bool = False
    deformableStage: bool = False
    initialization: str = _choice("search", INITIALIZATIONS)
    crop: bool = True
    cropRoi: vtkMRMLMarkupsROINode | None = None
    biasCorrection: str = _choice("auto", BIAS_CORRECTIONS)
    preset: Path = Path()
    harden: bool = False
    useMasks: bool = True
    acceptMirror: bool = False
    backend: str = _choice("auto", BACKENDS)
    fixedMask: vtkMRMLSegmentationNode | None = None
    movingMask: vtkMRMLSegmentationNode | None = None
    maskMode: str = _choice("intersect", MASK_MODES)
    outputTransform: vtkMRMLTransformNode | None = None
    outputVolume: vtkMRMLScalarVolumeNode | None = None
    metricsTable: vtkMRMLTableNode | None = None
    registeredRegion: vtkMRMLMarkupsROINode | None = None
    reportFolder: Path = Path()
    outputDicomReg: Path = Path()
    verdict: str = ""


RENAMED_FIELDS = {"autoCrop": "crop", "hardenResult": "harden", "presetFile": "preset",
                  "dicomRegFile": "outputDicomReg", "automaticInitialization": "initialization"}


def carry_renamed_parameters(node) -> None:
    """Move the settings a scene saved under a field's old name (RENAMED_FIELDS) to its current name, on the
    vtkMRMLScriptedModuleNode, ahead of the parameter node wrapper's defaults; the automaticInitialization
    check box becomes the initialization choice."""
    for old, new in RENAMED_FIELDS.items():
        value = node.GetParameter(old)
        if old == "automaticInitialization" and value:
            value = "search" if value == "True" else "center"
        if value and not node.GetParameter(new):
            node.SetParameter(new, value)
        node.UnsetParameter(old)


def optional_path(path) -> Path | None:
    """A path field's value, or None when it is empty (the parameter node stores an empty path as '.')."""
    text = str(path or "").strip()
    return None if text in ("", ".") else Path(text)


def apply_problem(settings) -> str | None:
    """Why Register cannot run with these settings, or None."""
    if not settings.fixedVolume or not settings.movingVolume:
        return "Select the fixed and the moving volume."
    if settings.fixedVolume == settings.movingVolume:
        return "The fixed and the moving volume must differ."
    if not (settings.rigidStage or settings.affineStage or settings.deformableStage):
        return "Select at least one stage."
    return None


def registration_arguments(settings) -> dict:
    """The keywords of RegistrationLogic.register for the panel's settings (besides the two volumes, progress
    and cancel): the one place where parameter-node fields reach the library."""
    stages = (("rigid", settings.rigidStage), ("affine", settings.affineStage),
              ("deformable", settings.deformableStage))
    preset = optional_path(settings.preset)
    return {
        "stages": tuple(stage for stage, selected in stages if selected),
        "initialization": settings.initialization,
        "crop": settings.crop,
        "crop_roi": settings.cropRoi,
        "use_masks": settings.useMasks,
        "fixed_mask": settings.fixedMask,
        "moving_mask": settings.movingMask,
        "mask_mode": settings.maskMode,
        "bias_correction": settings.biasCorrection,
        "presets": [preset] if preset is not None else [],
        "backend": settings.backend,
        "accept_mirror": settings.acceptMirror,
        "fixed_landmarks": settings.fixedLandmarks,
        "moving_landmarks": settings.movingLandmarks,
        "fixed_targets": settings.fixedTargets,
        "moving_targets": settings.movingTargets,
        "fixed_segmentation": settings.fixedSegmentation,
        "moving_segmentation": settings.movingSegmentation,
        "report_folder": optional_path(settings.reportFolder),
        "output_transform": settings.outputTransform,
        "output_volume": settings.outputVolume,
        "registered_region": settings.registeredRegion,
        "add_registered_region": True,
        "harden": settings.harden,
    }


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(item) for item in value)
    return str(value)


def _metric_rows(metrics: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += _metric_rows(value, f"{prefix}{key} ")
        else:
            rows.append((f"{prefix}{key}", _format_value(value)))
    return rows


def result_summary(result: SceneRegistrationResult) -> tuple[str, list[tuple[str, str]]]:
    """The verdict and the (metric, value) rows of a result: the one place where results reach the panel.
    The verdict is the quality check's (ok, check, failed), else the registration status."""
    verdict = result.verdict or result.status
    rows = [("verdict", verdict)]
    if result.error_bound_mm is not None:
        rows.append(("error bound, p95 (mm)", f"<= {result.error_bound_mm}"))
    rows += [("reason", reason) for reason in (result.qa.reasons if result.qa else [])]
    rows += [
        ("status", result.status),
        ("fixed / moving modality", f"{result.fixed_modality} / {result.moving_modality}"),
        ("elastix backend", result.backend),
        ("total time (s)", f"{result.seconds:.1f}"),
    ]
    rows += [(f"time {stage} (s)", f"{seconds:.1f}") for stage, seconds in result.stage_seconds.items()]
    rows += _metric_rows(result.metrics)
    if result.qa is not None:
        rows += _metric_rows(result.qa.metrics, "quality ")
    rows += [("warning", warning) for warning in result.warnings]
    return verdict, rows


def status_line(result: SceneRegistrationResult) -> str:
    """One line for the panel's status label: verdict, error bound, time, reasons and warnings."""
    bound = bound_text(result.error_bound_mm)
    notes = " ".join((result.qa.reasons if result.qa else []) + result.warnings)
    return f"{result.verdict or result.status}{bound} in {result.seconds:.1f} s. {notes}".strip()


def fill_metrics_table(table_node, rows: list[tuple[str, str]]) -> None:
    """Replace the table's content with two text columns, Metric and Value, and lock it."""
    modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    for index, name in enumerate(("Metric", "Value")):
        column = vtkStringArray()
        column.SetName(name)
        for row in rows:
            column.InsertNextValue(row[index])
        table_node.AddColumn(column)
    table_node.SetLocked(True)
    table_node.EndModify(modifying)


def image_with_geometry(image: sitk.Image, ijk_to_lps: np.ndarray) -> sitk.Image:
    """`image`'s voxels with the geometry of a 4x4 voxel-index-to-LPS matrix."""
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    placed = sitk.Image(image)
    placed.SetSpacing(spacing.tolist())
    placed.SetDirection((ijk_to_lps[:3, :3] / spacing).ravel().tolist())
    placed.SetOrigin(ijk_to_lps[:3, 3].tolist())
    return placed


@dataclass
class PanelRun:
    """What the result buttons need from the last successful registration."""

    fixed_volume: object
    moving_volume: object
    result: SceneRegistrationResult
    moving_geometry: np.ndarray  # the moving volume's voxel-to-LPS matrix (world) when registration started
    hardened: bool

    def aligned_moving_image(self, fixed: sitk.Image) -> sitk.Image:
        """The moving volume resampled on the fixed grid through the result (as the scene shows it when
        hardening resampled a deformable result's voxels)."""
        if self.hardened and self.result.deformable:
            return resample_on_grid(sitk_from_volume(self.moving_volume), fixed)
        moving = image_with_geometry(sitk_from_volume(self.moving_volume, world=False), self.moving_geometry)
        return resample_on_grid(moving, fixed, self.result.transform)


class Panel:
    """The panel's actions on the logic's scene: register, show the checkerboard, find the report."""

    def __init__(self, logic: RegistrationLogic):
        self.logic = logic
        self.last_run: PanelRun | None = None
        self.checkerboard_node = None

    def register(self, settings, progress: ProgressCallback | None = None,
                 cancelled: CancelledCallback | None = None) -> SceneRegistrationResult:
        """Register with `settings` and write the outputs back into them (transform, metrics table, verdict).
        On an error or a cancel the exception propagates and neither the scene nor the settings changed."""
        problem = apply_problem(settings)
        if problem is not None:
            raise InputError(problem)
        fixed, moving = settings.fixedVolume, settings.movingVolume
        geometry = ijk_to_world_lps(moving)
        result = self.logic.register(fixed, moving, progress=progress, cancelled=cancelled,
                                     **registration_arguments(settings))
        self.last_run = PanelRun(fixed, moving, result, geometry, settings.harden)
        verdict, rows = result_summary(result)
        if result.transform_node is not None:
            settings.outputTransform = result.transform_node
        if result.registered_region_node is not None:
            settings.registeredRegion = result.registered_region_node
        if not settings.metricsTable:
            settings.metricsTable = self.logic.context.scene.AddNewNodeByClass("vtkMRMLTableNode",
                                                                               "CT-MR registration metrics")
        fill_metrics_table(settings.metricsTable, rows)
        settings.verdict = verdict
        return result

    def can_show_checkerboard(self, settings) -> bool:
        """Whether there is a result for the volumes now selected (the checkerboard and the REG need one)."""
        run = self.last_run
        return run is not None and (run.fixed_volume, run.moving_volume) == (settings.fixedVolume,
                                                                             settings.movingVolume)

    def show_checkerboard(self):
        """The checkerboard volume of the last run (created once, then updated), displayed from 0 to 1."""
        run = self.last_run
        fixed = sitk_from_volume(run.fixed_volume)
        board = checkerboard(fixed, run.aligned_moving_image(fixed))
        scene = self.logic.context.scene
        if self.checkerboard_node is None or scene.GetNodeByID(self.checkerboard_node.GetID()) is None:
            name = scene.GenerateUniqueName(f"{run.moving_volume.GetName()} checkerboard")
            self.checkerboard_node = add_volume_from_sitk(self.logic.context, board, name)
        else:
            update_volume_from_sitk(self.checkerboard_node, board)
        display = self.checkerboard_node.GetDisplayNode()
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)
        return self.checkerboard_node

    def crop_volumes(self, settings) -> tuple:
        """Cropped copies of the fixed and moving volumes (as they lie in the scene) inside the crop region, else
        the registered region, made by the scene's Crop Volume logic (voxel-based: voxels keep their positions)."""
        roi = settings.cropRoi or settings.registeredRegion
        if roi is None:
            raise InputError("No region yet: register first, or choose a crop region.")
        return tuple(cropped_volume(self.logic.context, volume, roi)
                     for volume in (settings.fixedVolume, settings.movingVolume))

    def export_needs_confirmation(self) -> bool:
        """Whether the last result's verdict is failed: its DICOM REG needs the user's explicit choice."""
        return self.last_run is not None and self.last_run.result.verdict == "failed"

    def export_dicom_registration(self, settings, allow_failed: bool = False) -> Path:
        """The last result as a DICOM (Deformable) Spatial Registration object in the DICOM REG file; both
        volumes must come from Slicer's DICOM module. A failed verdict needs `allow_failed`."""
        path = optional_path(settings.outputDicomReg)
        if path is None:
            raise InputError("Choose the DICOM REG file to write.")
        if not self.can_show_checkerboard(settings):
            raise InputError("No result for these volumes yet: register first.")
        run = self.last_run
        return Path(export_dicom_registration(path, run.result, run.fixed_volume, run.moving_volume, allow_failed))

    @staticmethod
    def report_target(settings) -> Path | None:
        """What 'Open report' opens: the report when it exists, else its folder; None without a folder."""
        folder = optional_path(settings.reportFolder)
        if folder is None or not folder.is_dir():
            return None
        return folder / REPORT_NAME if (folder / REPORT_NAME).is_file() else folder
