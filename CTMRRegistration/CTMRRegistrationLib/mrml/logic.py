"""Registration on MRML nodes: the library class behind the Slicer module's logic and the CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import SimpleITK as sitk

from ..core.errors import Cancelled, InputError
from ..core.imaging import guess_modality
from ..core.masks import foreground_mask
from ..qa.assess import QAOptions, QAResult, assess
from ..qa.report import write_qa_report
from ..qa.second_chance import retry_if_failed
from ..registration.pipeline import (
    ProgressCallback,
    RegistrationOptions,
    RegistrationResult,
    register_images,
    scaled_progress,
)
from .landmark_registration import LandmarkRegistrationResult, markups_points, register_points
from .nodes import (
    add_volume_from_sitk,
    labels_from_markups,
    parent_transforms,
    sitk_from_volume,
    update_volume_from_sitk,
)
from .qa_inputs import check_pair, segmentation_pair, target_points
from .scene import MRMLContext, default_context
from .transform_nodes import (
    as_grid,
    inverse_transform_node,
    new_transform_node,
    set_registration_references,
    set_transform_node_from_sitk,
)

QA_PROGRESS = 0.9  # the share of the progress bar the registration takes when the assessment follows


def _take_out_of_chain(node, transform_node) -> None:
    """Remove `transform_node` from `node`'s chain of parent transforms (its child takes its parent), so that
    a registration result written into it does not move the volume twice."""
    for child, parent in zip([node] + parent_transforms(node), parent_transforms(node)):
        if parent is transform_node:
            child.SetAndObserveTransformNodeID(transform_node.GetTransformNodeID())
            transform_node.SetAndObserveTransformNodeID(None)
            return


def _apply_on_top(node, transform_node) -> None:
    """Put `transform_node` above the last transform of `node`'s chain (unless that would close a loop)."""
    chain = parent_transforms(node)
    top = chain[-1] if chain else node
    if top is not transform_node and top not in parent_transforms(transform_node):
        top.SetAndObserveTransformNodeID(transform_node.GetID())


def resample_on_fixed_grid(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """`moving` resampled on `fixed`'s grid through the fixed->moving `transform` (linear interpolation);
    outside the moving image the value is its minimum (air for CT, background for MR)."""
    background = float(sitk.GetArrayViewFromImage(moving).min())
    return sitk.Resample(moving, fixed, transform, sitk.sitkLinear, background, sitk.sitkFloat32)


class RegistrationLogic:
    """Registers a moving volume node to a fixed one in a scene, inside Slicer or headless."""

    def __init__(self, context: MRMLContext | None = None):
        self.context = context or default_context()

    def _mask_node(self, mask, volume_node):
        name = self.context.scene.GenerateUniqueName(f"{volume_node.GetName()} foreground")
        return add_volume_from_sitk(self.context, mask, name, labelmap=True)

    def foreground_mask_node(self, volume_node, modality: str | None = None):
        """A labelmap node (value 1) of the object in `volume_node`: CT body without table and air,
        or MR object without background and borders. `modality` 'CT' or 'MR' (default: guessed)."""
        image = sitk_from_volume(volume_node)
        return self._mask_node(foreground_mask(image, modality or guess_modality(image)), volume_node)

    def inverse_transform_node(self, transform_node, grid_reference_volume=None):
        """A new node with the inverse transform: exact for linear results; a deformable result's inverse is
        computed by Slicer on the fly, or sampled as a grid transform on `grid_reference_volume`."""
        return inverse_transform_node(self.context, transform_node, grid_reference_volume)

    def register(
        self,
        fixed_node,
        moving_node,
        output_transform_node=None,
        apply_to_moving: bool = True,
        harden: bool = False,
        output_volume_node=None,
        grid_transform: bool = False,
        progress: ProgressCallback | None = None,
        add_mask_nodes: bool = False,
        fixed_landmarks=None,
        moving_landmarks=None,
        fixed_targets=None,
        moving_targets=None,
        fixed_segmentation=None,
        moving_segmentation=None,
        qa: bool | QAOptions = True,
        report_directory=None,
        **options,
    ) -> RegistrationResult:
        """Register, assess and store the result in a transform node (result.transform_node).

        Linear results give a vtkMRMLLinearTransformNode, deformable ones a B-spline transform node (a grid
        transform on the registration's 2 mm fixed grid with `grid_transform`); the node references the
        fixed and moving volumes. With `apply_to_moving`, it is placed on top of the moving volume's
        transform chain, so the moving volume shows aligned; `harden` then hardens it (linear: the volume's
        header changes, voxels are not resampled). `output_volume_node` receives the moving volume
        resampled on the fixed grid. With `add_mask_nodes`, the foreground masks the registration used become
        labelmap nodes (result.mask_nodes, keyed 'fixed' and 'moving') to inspect.

        Landmark lists (markups, paired by label or position, at least 3) replace the automatic start pose.
        The quality assessment (`qa`: True, False or QAOptions) gives result.verdict and result.qa; target
        lists and segmentations (segmentation or labelmap nodes) add TRE, Dice and surface distances before
        and after. `report_directory` receives an HTML report. Positions are read in world coordinates, except
        for `output_transform_node` itself, so registering again into the same node does not compound.
        `options` are the fields of RegistrationOptions (stages, initialization, backend, threads, ...).
        Nothing in the scene changes when registration fails or is cancelled.
        """
        if (output_transform_node is not None and output_transform_node.IsA("vtkMRMLLinearTransformNode")
                and "deformable" in options.get("stages", ())):
            raise InputError(f"'{output_transform_node.GetName()}' is a linear transform node: it cannot hold "
                             "a deformable result (choose a plain transform node or none)")
        if report_directory is not None and not qa:
            raise InputError("a report needs the quality assessment: leave qa on")
        leave_out = output_transform_node
        fixed = sitk_from_volume(fixed_node, leave_out=leave_out)
        moving = sitk_from_volume(moving_node, leave_out=leave_out)
        landmarks = self._landmark_start(fixed_landmarks, moving_landmarks, leave_out)
        if landmarks is not None:
            options["initial_matrix"] = landmarks.transform.matrix
        ground_truth = target_points(fixed_targets, moving_targets, leave_out)
        ground_truth |= segmentation_pair(self.context, fixed_segmentation, moving_segmentation)
        share = QA_PROGRESS if qa else 1.0
        result = register_images(fixed, moving, RegistrationOptions(**options), scaled_progress(progress, 0.0, share))
        if landmarks is not None:
            result.metrics["initialization"] = {"method": "landmarks", **landmarks.as_dict()}
            result.warnings += landmarks.warnings
        if add_mask_nodes and result.fixed_mask is not None:
            result.mask_nodes = {
                "fixed": self._mask_node(result.fixed_mask, fixed_node),
                "moving": self._mask_node(result.moving_mask, moving_node),
            }
        if result.status != "ok":
            return result
        if qa:
            result.qa = self._assess(result, fixed, moving, ground_truth, qa, options, progress)
            result = retry_if_failed(fixed, moving, result, RegistrationOptions(**options), lambda retry: self._assess(
                retry, fixed, moving, ground_truth, qa, options, None))
        if report_directory is not None:
            parameters = {name: value for name, value in options.items() if not callable(value)}
            self.write_report(report_directory, result, fixed, moving, fixed_node, moving_node, parameters)
        if output_transform_node is not None:
            _take_out_of_chain(moving_node, output_transform_node)
        result.transform_node = self._store_transform(result, fixed_node, moving_node, output_transform_node,
                                                      grid_transform)
        if output_volume_node is not None:
            update_volume_from_sitk(output_volume_node, resample_on_fixed_grid(fixed, moving, result.transform))
        if apply_to_moving or harden:
            _apply_on_top(moving_node, result.transform_node)
        if harden:
            self.context.transforms.hardenTransform(moving_node)
        return result

    @staticmethod
    def _landmark_start(fixed_landmarks, moving_landmarks, leave_out) -> LandmarkRegistrationResult | None:
        if not check_pair(fixed_landmarks, moving_landmarks, "landmark lists"):
            return None
        return register_points(markups_points(fixed_landmarks, leave_out), markups_points(moving_landmarks, leave_out),
                               "rigid", labels_from_markups(fixed_landmarks), labels_from_markups(moving_landmarks))

    @staticmethod
    def _assess(result: RegistrationResult, fixed, moving, ground_truth: dict, qa, options: dict, progress) -> QAResult:
        cancelled = options.get("cancelled")
        if cancelled is not None and cancelled():
            raise Cancelled("registration cancelled")
        report_progress = scaled_progress(progress, QA_PROGRESS, 1.0)
        report_progress(0.0, "quality assessment")
        qa_options = qa if isinstance(qa, QAOptions) else QAOptions(threads=options.get("threads"))
        qa_options = replace(qa_options, fixed_modality=result.fixed_modality, moving_modality=result.moving_modality)
        assessment = assess(fixed, moving, result.transform, fixed_mask=result.fixed_mask,
                            moving_mask=result.moving_mask, options=qa_options, **ground_truth)
        report_progress(1.0, f"done: verdict {assessment.verdict}")
        return assessment

    @staticmethod
    def write_report(directory, result: RegistrationResult, fixed: sitk.Image, moving: sitk.Image, fixed_node,
                     moving_node, parameters: dict | None = None) -> Path:
        """The HTML report of an assessed registration (pictures before: the headers as they were)."""
        inputs = {"fixed": fixed_node.GetName(), "moving": moving_node.GetName()}
        return write_qa_report(directory, fixed, moving, result.transform, result.qa, inputs=inputs,
                               parameters=parameters, registration=result.as_dict())

    def _store_transform(self, result, fixed_node, moving_node, node, grid_transform: bool):
        if node is None:
            node = new_transform_node(self.context, result.transform, f"{moving_node.GetName()} to "
                                      f"{fixed_node.GetName()}")
        else:
            set_transform_node_from_sitk(self.context, node, result.transform)
        if grid_transform and result.deformable:
            reference = add_volume_from_sitk(self.context, result.fixed_mask, "grid reference")
            node = as_grid(self.context, node, reference)
            self.context.scene.RemoveNode(reference)
        set_registration_references(node, fixed_node, moving_node)
        return node
