"""Registration on MRML nodes: the library class behind the Slicer module's logic and the CLI."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import Cancelled, InputError
from ..core.imaging import guess_modality, resample_on_grid
from ..core.masks import foreground_mask
from ..core.output_files import write_folder_atomically
from ..elastix.backends import choose_backend
from ..qa.assess import QAOptions, QAResult, assess
from ..qa.report import write_qa_report
from ..qa.second_chance import retry_if_failed
from ..registration.pipeline import (
    CancelledCallback,
    ProgressCallback,
    RegistrationOptions,
    RegistrationResult,
    register_images,
    scaled_progress,
)
from .crop_roi import roi_corners, roi_from_corners, set_roi_corners
from .dicom_nodes import tag_modality
from .landmark_registration import LandmarkRegistrationResult, register_points
from .mask_nodes import with_mask_images
from .nodes import (
    add_volume_from_sitk,
    labels_from_markups,
    parent_transforms,
    points_from_markups,
    sitk_from_volume,
    update_volume_from_sitk,
)
from .qa_inputs import check_pair, segmentation_pair, target_points
from .scene import MRMLContext, default_context
from .scene_registration import SceneOptions, SceneRegistrationResult, split_options
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


def _report_parameters(options: RegistrationOptions) -> dict:
    """The options a report lists: those that differ from the defaults."""
    defaults = RegistrationOptions()
    listed = {f.name: getattr(options, f.name) for f in fields(options)
              if not _same(getattr(options, f.name), getattr(defaults, f.name))}
    if not isinstance(options.backend, str):
        listed["backend"] = options.backend.name
    return {name: "given" if isinstance(value, sitk.Image) else value for name, value in listed.items()}


def _same(a, b) -> bool:
    if isinstance(a, sitk.Image) or isinstance(b, sitk.Image):
        return a is b
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b


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
        options: RegistrationOptions | None = None,
        scene: SceneOptions | None = None,
        *,
        progress: ProgressCallback | None = None,
        cancelled: CancelledCallback | None = None,
        **keywords,
    ) -> SceneRegistrationResult:
        """Register, assess and store the result in a transform node (result.transform_node).

        `options` (RegistrationOptions: stages, initialization, backend, threads, ...) say how to register,
        `scene` (SceneOptions) which nodes feed the registration and where its results go; `keywords` are
        fields of either (e.g. `stages=("rigid", "affine")`, `report_directory="qa"`) and override them.

        Linear results give a vtkMRMLLinearTransformNode, deformable ones a B-spline transform node (a grid
        transform on the registration's 2 mm fixed grid with `grid_transform`); the node references the
        fixed and moving volumes. With `apply_to_moving`, it is placed on top of the moving volume's
        transform chain (a world-space result above the transforms the volume already has), so the moving
        volume shows aligned; `harden` then hardens it (linear: the volume's header changes, voxels are not
        resampled). `output_volume_node` receives the moving volume resampled on the fixed grid. With
        `add_mask_nodes`, the foreground masks the registration used become labelmap nodes (result.mask_nodes).

        Landmark lists (markups, paired by label or position, at least 3) replace the automatic start pose.
        The quality assessment (`qa`: True, False or QAOptions) gives result.verdict and result.qa; target
        lists and segmentations (segmentation or labelmap nodes) add TRE, Dice and surface distances before
        and after. `report_directory` receives an HTML report. Positions are read in world coordinates, except
        for `output_transform_node` itself, so registering again into the same node does not compound.
        `progress(fraction, message)` hears of every step and `cancelled()` is polled throughout, the quality
        assessment included. Nothing in the scene changes when registration fails or is cancelled. User masks
        (fixed_mask, moving_mask) may be labelmap or segmentation nodes; a node's DICOM modality (see
        mrml.dicom_nodes) is used unless fixed_modality/moving_modality say otherwise.
        """
        options, scene = split_options(options, scene, keywords)
        output_node = scene.output_transform_node
        if (output_node is not None and output_node.IsA("vtkMRMLLinearTransformNode")
                and "deformable" in options.stages):
            raise InputError(f"'{output_node.GetName()}' is a linear transform node: it cannot hold "
                             "a deformable result (choose a plain transform node or none)")
        options = replace(options, backend=choose_backend(options.backend, options.elastix_executable))
        fixed = tag_modality(sitk_from_volume(fixed_node, leave_out=output_node), fixed_node)
        moving = tag_modality(sitk_from_volume(moving_node, leave_out=output_node), moving_node)
        options = with_mask_images(self.context, options)
        if scene.crop_roi is not None:
            options = replace(options, crop=True, crop_region=roi_corners(scene.crop_roi))
        landmarks = self._landmark_start(scene.fixed_landmarks, scene.moving_landmarks, output_node)
        if landmarks is not None:
            options = replace(options, initial_matrix=landmarks.transform.matrix)
        ground_truth = target_points(scene.fixed_targets, scene.moving_targets, output_node)
        ground_truth |= segmentation_pair(self.context, scene.fixed_segmentation, scene.moving_segmentation)
        share = QA_PROGRESS if scene.qa else 1.0
        registration = register_images(fixed, moving, options, progress=scaled_progress(progress, 0.0, share),
                                       cancelled=cancelled)
        result = SceneRegistrationResult(registration)
        if landmarks is not None:
            registration.metrics["initialization"] = {"method": "landmarks", **landmarks.as_dict()}
            registration.warnings += landmarks.warnings
        if registration.status != "ok":
            self._add_mask_nodes(result, fixed_node, moving_node, scene)
            return result
        if scene.qa:
            qa_options = scene.qa if isinstance(scene.qa, QAOptions) else QAOptions(threads=options.threads)
            qa_options = replace(qa_options, backend=options.backend)
            result.qa = self._assess(registration, fixed, moving, ground_truth, qa_options, progress, cancelled)
            result.registration, result.qa = retry_if_failed(
                fixed, moving, registration, result.qa, options, cancelled=cancelled,
                assess_result=lambda retry: self._assess(retry, fixed, moving, ground_truth, qa_options, None,
                                                         cancelled))
        if scene.report_directory is not None:
            write_folder_atomically(scene.report_directory, lambda folder: self.write_report(
                folder, result, fixed, moving, fixed_node, moving_node, _report_parameters(options)))
        if cancelled is not None and cancelled():
            raise Cancelled("registration cancelled")
        self._store(result, fixed, moving, fixed_node, moving_node, scene)
        return result

    def _store(self, result: SceneRegistrationResult, fixed, moving, fixed_node, moving_node,
               scene: SceneOptions) -> None:
        """Put the result in the scene: the transform node, the masks, the resampled volume, the moving chain."""
        self._add_mask_nodes(result, fixed_node, moving_node, scene)
        if result.crop_region is not None and scene.output_crop_roi is not None:
            set_roi_corners(scene.output_crop_roi, result.crop_region)
            result.crop_roi_node = scene.output_crop_roi
        elif result.crop_region is not None and scene.add_crop_roi:
            result.crop_roi_node = roi_from_corners(self.context, result.crop_region, f"{fixed_node.GetName()} region")
        if scene.output_transform_node is not None:
            _take_out_of_chain(moving_node, scene.output_transform_node)
        result.transform_node = self._store_transform(result, fixed_node, moving_node, scene.output_transform_node,
                                                      scene.grid_transform)
        if scene.output_volume_node is not None:
            update_volume_from_sitk(scene.output_volume_node, resample_on_grid(moving, fixed, result.transform))
        if scene.apply_to_moving or scene.harden:
            _apply_on_top(moving_node, result.transform_node)
        if scene.harden:
            self.context.transforms.hardenTransform(moving_node)

    def _add_mask_nodes(self, result: SceneRegistrationResult, fixed_node, moving_node, scene: SceneOptions) -> None:
        if scene.add_mask_nodes and result.fixed_mask is not None:
            result.mask_nodes = {
                "fixed": self._mask_node(result.fixed_mask, fixed_node),
                "moving": self._mask_node(result.moving_mask, moving_node),
            }

    @staticmethod
    def _landmark_start(fixed_landmarks, moving_landmarks, leave_out) -> LandmarkRegistrationResult | None:
        if not check_pair(fixed_landmarks, moving_landmarks, "landmark lists"):
            return None
        return register_points(points_from_markups(fixed_landmarks, leave_out),
                               points_from_markups(moving_landmarks, leave_out), "rigid",
                               labels_from_markups(fixed_landmarks), labels_from_markups(moving_landmarks))

    @staticmethod
    def _assess(registration: RegistrationResult, fixed, moving, ground_truth: dict, qa_options: QAOptions,
                progress, cancelled) -> QAResult:
        report_progress = scaled_progress(progress, QA_PROGRESS, 1.0)
        report_progress(0.0, "quality assessment")
        qa_options = replace(qa_options, fixed_modality=registration.fixed_modality,
                             moving_modality=registration.moving_modality)
        assessment = assess(fixed, moving, registration.transform, fixed_mask=registration.fixed_mask,
                            moving_mask=registration.moving_mask, options=qa_options, cancelled=cancelled,
                            **ground_truth)
        report_progress(1.0, f"done: verdict {assessment.verdict}")
        return assessment

    @staticmethod
    def write_report(directory, result: SceneRegistrationResult, fixed: sitk.Image, moving: sitk.Image, fixed_node,
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
