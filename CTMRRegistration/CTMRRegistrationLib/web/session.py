"""The scene side of `ctmr-web`: one MRML scene, the panel layer (apps.panel) on it, and the pair loaded.

Every action goes through `Panel` and `PanelSettings`, as the Slicer widget's do; this module only loads the
inputs into the scene and writes the outputs where the user asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from ..apps.panel import Panel, PanelSettings, result_summary, status_line
from ..core.errors import InputError
from ..core.image_files import check_written_volume
from ..core.output_files import write_atomically
from ..dicom.registration_objects import write_registration_object
from ..mrml import node_io
from ..mrml.dicom_nodes import load_input_volume
from ..mrml.logic import RegistrationLogic
from ..mrml.nodes import sitk_from_volume
from ..mrml.qa_inputs import load_qa_files
from ..mrml.scene import MRMLContext
from ..mrml.scene_registration import SceneRegistrationResult
from ..registration.pipeline import CancelledCallback, ProgressCallback

STAGES = ("rigid", "affine", "deformable")
TRANSFORM_NAME = "transform_fixed_to_moving.h5"
VOLUME_NAME = "moving_on_fixed.nrrd"
DICOM_REG_NAME = "registration.dcm"
REPORT_DIRECTORY = "report"


@dataclass
class QaFiles:
    """Optional inputs of the quality check: landmarks (start pose), targets (TRE), segmentations (Dice)."""

    fixed_landmarks: Path | None = None
    moving_landmarks: Path | None = None
    fixed_targets: Path | None = None
    moving_targets: Path | None = None
    fixed_segmentation: Path | None = None
    moving_segmentation: Path | None = None


@dataclass
class Summary:
    """What the page shows of a result."""

    verdict: str
    status_line: str
    error_bound_mm: float | None
    reasons: list[str]
    rows: list[tuple[str, str]] = field(default_factory=list)


class RegistrationSession:
    """The pair in the scene, the panel's settings for it, and its outputs."""

    def __init__(self, context: MRMLContext):
        self.context = context
        self.panel = Panel(RegistrationLogic(context))
        self.settings = PanelSettings()
        self.series = (None, None)  # the DICOM series of (fixed, moving), None for volume files
        self.names = ("", "")
        self._kept = self._node_ids()

    def keep_current_nodes(self) -> None:
        """Nodes present now (the views' own) stay when another pair is loaded."""
        self._kept = self._node_ids()

    def _node_ids(self) -> set[str]:
        scene = self.context.scene
        return {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}

    def clear(self) -> None:
        """Remove the pair, its inputs and its results from the scene."""
        scene = self.context.scene
        for node_id in self._node_ids() - self._kept:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)
        self.panel = Panel(self.panel.logic)
        self.settings = PanelSettings()
        self.series, self.names = (None, None), ("", "")

    def load_pair(self, fixed: Path, moving: Path) -> None:
        """Load a fixed and a moving volume (files or DICOM folders) in place of the pair loaded before."""
        self.clear()
        fixed_node, fixed_series = load_input_volume(self.context, fixed, None, "fixed")
        moving_node, moving_series = load_input_volume(self.context, moving, None, "moving")
        for node in (fixed_node, moving_node):
            node.CreateDefaultDisplayNodes()  # the slice views show them
        self.settings.fixedVolume, self.settings.movingVolume = fixed_node, moving_node
        self.series = (fixed_series, moving_series)
        self.names = (Path(fixed).name, Path(moving).name)

    def load_qa(self, files: QaFiles) -> list[str]:
        """Load the quality inputs given (in pairs) into the settings; the names of the kinds loaded."""
        settings = self.settings
        if not settings.fixedVolume:
            raise InputError("Load a pair first.")
        loaded = []
        if (files.fixed_landmarks is None) != (files.moving_landmarks is None):
            raise InputError("landmarks: give both the fixed and the moving one")
        if files.fixed_landmarks is not None:
            settings.fixedLandmarks = node_io.load_markups(self.context, files.fixed_landmarks)
            settings.movingLandmarks = node_io.load_markups(self.context, files.moving_landmarks)
            loaded.append("landmarks")
        nodes = load_qa_files(self.context, files.fixed_targets, files.moving_targets, files.fixed_segmentation,
                              files.moving_segmentation, volumes=(settings.fixedVolume, settings.movingVolume))
        for key, node in nodes.items():
            role, kind = key.split("_")
            setattr(settings, role + kind.capitalize(), node)
        loaded += sorted({key.split("_")[1] for key in nodes})
        return loaded

    def register(self, stages: tuple[str, ...], output_folder: Path | None, progress: ProgressCallback,
                 cancelled: CancelledCallback) -> SceneRegistrationResult:
        """Panel.register with these stages; the report goes to `output_folder`/report when a folder is given.
        On a cancel or an error the scene and the settings stay as they were."""
        settings = self.settings
        previous = (settings.rigidStage, settings.affineStage, settings.deformableStage, settings.reportFolder)
        settings.rigidStage, settings.affineStage, settings.deformableStage = (stage in stages for stage in STAGES)
        settings.reportFolder = output_folder / REPORT_DIRECTORY if output_folder else Path()
        try:
            return self.panel.register(settings, progress=progress, cancelled=cancelled)
        except BaseException:
            settings.rigidStage, settings.affineStage, settings.deformableStage, settings.reportFolder = previous
            raise

    def result(self) -> SceneRegistrationResult | None:
        """The last registration of the pair loaded, or None."""
        run = self.panel.last_run
        return run.result if run is not None and self.panel.can_show_checkerboard(self.settings) else None

    def summary(self) -> Summary | None:
        """Verdict, reasons, error bound and metric rows of the last result (apps.panel's wording)."""
        result = self.result()
        if result is None:
            return None
        verdict, rows = result_summary(result)
        return Summary(verdict, status_line(result), result.error_bound_mm,
                       list(result.qa.reasons) if result.qa else [], rows)

    def report_path(self) -> Path | None:
        """The report of the last result, when one was written."""
        target = self.panel.report_target(self.settings)
        return target if target is not None and target.is_file() else None

    def _needs_result(self) -> SceneRegistrationResult:
        result = self.result()
        if result is None or result.transform_node is None:
            raise InputError("No result for this pair yet: register first.")
        return result

    def save_transform(self, folder: Path) -> Path:
        """The result's transform (fixed -> moving, LPS) as an ITK .h5 file in `folder`."""
        result = self._needs_result()
        return node_io.save_node(self.context, result.transform_node, folder / TRANSFORM_NAME)

    def save_volume(self, folder: Path) -> Path:
        """The moving volume resampled on the fixed grid through the result, as NRRD in `folder`."""
        self._needs_result()
        run = self.panel.last_run
        image = run.aligned_moving_image(sitk_from_volume(run.fixed_volume))
        return write_atomically(folder / VOLUME_NAME, lambda path: sitk.WriteImage(image, str(path), True),
                                check_written_volume)

    def save_dicom_reg(self, folder: Path, allow_failed: bool = False) -> Path:
        """The result as a DICOM (Deformable) Spatial Registration object; both volumes must come from DICOM and a
        failed verdict needs `allow_failed`."""
        result = self._needs_result()
        fixed_series, moving_series = self.series
        if fixed_series is None or moving_series is None:
            raise InputError("A DICOM REG needs both volumes loaded from DICOM folders.")
        if self.panel.export_needs_confirmation() and not allow_failed:
            raise InputError("The verdict is failed: tick 'export even if failed' to write the DICOM REG.")
        fixed = sitk_from_volume(self.settings.fixedVolume)
        return write_atomically(folder / DICOM_REG_NAME, lambda path: write_registration_object(
            path, result.transform, fixed_series, moving_series, fixed, result.verdict, allow_failed))

    def apply_transform_file(self, path: Path) -> None:
        """Place the moving volume through a transform file (fixed -> moving), as a cohort case's result."""
        node = node_io.load_transform(self.context, path)
        self.settings.movingVolume.SetAndObserveTransformNodeID(node.GetID())
