"""Registration on MRML nodes: the library class behind the Slicer module's logic and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import Cancelled, InputError
from ..core.imaging import guess_modality, resample_on_grid
from ..core.masks import foreground_mask
from ..core.output_files import write_folder_atomically
from ..elastix.backends import ElastixBackend, choose_backend
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
from .nodes import (
    add_volume_from_sitk,
    labels_from_markups,
    parent_transforms,
    points_from_markups,
    sitk_from_volume,
    update_volume_from_sitk,
)
from .qa_inputs import check_pair, mask_image, segmentation_pair, target_points
from .scene import MRMLContext, default_context
from .scene_registration import SceneRegistrationResult, renamed_keywords
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
        *,
        stages: Sequence[str] | str = ("rigid",),
        initialization: str = "search",
        initial_matrix: np.ndarray | None = None,
        crop: bool = True,
        crop_roi=None,
        use_masks: bool = True,
        fixed_mask=None,
        moving_mask=None,
        mask_mode: str = "intersect",
        bias_correction: str = "auto",
        presets: Sequence[str | Path] = (),
        backend: str | ElastixBackend = "auto",
        elastix_executable: str | Path | None = None,
        threads: int | None = None,
        fixed_modality: str | None = None,
        moving_modality: str | None = None,
        accept_mirror: bool = False,
        force_stages: bool = False,
        fine_rigid: bool = False,
        fixed_landmarks=None,
        moving_landmarks=None,
        fixed_targets=None,
        moving_targets=None,
        fixed_segmentation=None,
        moving_segmentation=None,
        qa: bool | QAOptions = True,
        report_folder: str | Path | None = None,
        output_transform=None,
        output_volume=None,
        registered_region=None,
        add_registered_region: bool = False,
        apply_to_moving: bool = True,
        harden: bool = False,
        grid_transform: bool = False,
        add_mask_nodes: bool = False,
        progress: ProgressCallback | None = None,
        cancelled: CancelledCallback | None = None,
        **deprecated,
    ) -> SceneRegistrationResult:
        """Register `moving_node` to `fixed_node` (scalar volume nodes; either may be the CT), assess the result
        and store it in a transform node. Nothing in the scene changes when registration fails or is cancelled.

        Registration:
            stages: elastix stages in order, from "rigid", "affine", "deformable" (or "rigid,affine").
            initialization: the start pose: "search" (all orientations), "center" (centres aligned) or "none".
            initial_matrix: a 4x4 fixed->moving LPS start pose; replaces the search.
            crop: register only the region both objects share at the start pose.
            crop_roi: a markups ROI node (fixed volume's frame): register within it instead.
            use_masks: restrict elastix to the automatic foreground masks (no table, air or black borders).
            fixed_mask, moving_mask: labelmap or segmentation nodes; combined with the automatic masks by
                mask_mode: "intersect" (both) or "replace" (the user's mask alone).
            bias_correction: MR bias-field correction (N4): "auto" (MR images only), "on" or "off".
            presets: elastix parameter files; each replaces the bundled preset of the stage its Transform names.
            backend: "auto" (an elastix executable when one is found, else the itk-elastix wheel), "elastix",
                "itk-elastix", or an ElastixBackend.
            elastix_executable: the elastix executable or its folder.
            threads: threads for elastix and ITK (default: all).
            fixed_modality, moving_modality: "CT" or "MR" instead of the DICOM tag or the intensities.
            accept_mirror: register even when the moving volume looks mirrored (status "mirrored" otherwise).
            force_stages: keep affine/deformable results that the stage guard finds worse than the stage before.
            fine_rigid: run the rigid stage on the 1 mm grid of the finer stages (slower; closer on deformed anatomy).
        Start pose and quality check:
            fixed_landmarks, moving_landmarks: markups point lists (paired by label, else by position; at least
                3): their rigid fit replaces the automatic start pose.
            fixed_targets, moving_targets: markups point lists: target registration error before and after.
            fixed_segmentation, moving_segmentation: segmentation or labelmap nodes: Dice and surface distances.
            qa: run the quality assessment (True, False, or QAOptions): result.verdict and result.qa.
            report_folder: folder for the HTML report (needs qa).
        Outputs:
            output_transform: a transform node to write the result into (default: a new node); registering
                again into it replaces its content.
            output_volume: a scalar volume node that receives the moving volume resampled on the fixed grid, in
                its own pixel type.
            registered_region: a markups ROI node that receives the region registered (result.
                registered_region_node); add_registered_region makes a new one when none is given.
            apply_to_moving: place the result on top of the moving volume's transforms, so it shows aligned.
            harden: then harden it (linear: the volume's header changes, voxels are not resampled).
            grid_transform: store a deformable result as a grid transform instead of a B-spline.
            add_mask_nodes: the foreground masks used, as labelmap nodes (result.mask_nodes).
            progress: progress(fraction, message) hears of every step.
            cancelled: polled throughout, the quality assessment included; True raises Cancelled.

        Positions are read in world coordinates, leaving out `output_transform` itself.
        """
        if deprecated:
            renamed = renamed_keywords(deprecated)
            report_folder = renamed.get("report_folder", report_folder)
            output_transform = renamed.get("output_transform", output_transform)
            output_volume = renamed.get("output_volume", output_volume)
            registered_region = renamed.get("registered_region", registered_region)
            add_registered_region = renamed.get("add_registered_region", add_registered_region)
        if report_folder is not None and not qa:
            raise InputError("a report needs the quality assessment: leave qa on")
        if isinstance(stages, str):
            stages = tuple(stage.strip() for stage in stages.split(",") if stage.strip())
        if (output_transform is not None and output_transform.IsA("vtkMRMLLinearTransformNode")
                and "deformable" in stages):
            raise InputError(f"'{output_transform.GetName()}' is a linear transform node: it cannot hold "
                             "a deformable result (choose a plain transform node or none)")
        options = RegistrationOptions(
            initialization=initialization, initial_matrix=initial_matrix, use_masks=use_masks, crop=crop,
            crop_region=roi_corners(crop_roi) if crop_roi is not None else None, accept_mirror=accept_mirror,
            stages=tuple(stages), presets=presets, backend=choose_backend(backend, elastix_executable),
            elastix_executable=elastix_executable, threads=threads, fixed_modality=fixed_modality,
            moving_modality=moving_modality, bias_correction=bias_correction,
            fixed_mask=self._mask_image(fixed_mask), moving_mask=self._mask_image(moving_mask), mask_mode=mask_mode,
            force_stages=force_stages, fine_rigid=fine_rigid,
        )
        fixed = tag_modality(sitk_from_volume(fixed_node, leave_out=output_transform), fixed_node)
        moving = tag_modality(sitk_from_volume(moving_node, leave_out=output_transform), moving_node)
        landmarks = self._landmark_start(fixed_landmarks, moving_landmarks, output_transform)
        if landmarks is not None:
            options = replace(options, initial_matrix=landmarks.transform.matrix)
        ground_truth = target_points(fixed_targets, moving_targets, output_transform)
        ground_truth |= segmentation_pair(self.context, fixed_segmentation, moving_segmentation)
        share = QA_PROGRESS if qa else 1.0
        registration = register_images(fixed, moving, options, progress=scaled_progress(progress, 0.0, share),
                                       cancelled=cancelled)
        if landmarks is not None:
            registration.metrics["initialization"] = {"method": "landmarks", **landmarks.as_dict()}
            registration.warnings += landmarks.warnings
        assessment = None
        if registration.status == "ok" and qa:
            qa_options = qa if isinstance(qa, QAOptions) else QAOptions(threads=threads,
                                                                         bias_correction=options.bias_correction)
            qa_options = replace(qa_options, backend=options.backend)
            assessment = self._assess(registration, fixed, moving, ground_truth, qa_options, progress, cancelled)
            registration, assessment = retry_if_failed(
                fixed, moving, registration, assessment, options, cancelled=cancelled,
                assess_result=lambda retry: self._assess(retry, fixed, moving, ground_truth, qa_options, None,
                                                         cancelled))
        result = SceneRegistrationResult.from_registration(registration, qa=assessment)
        if registration.status != "ok":
            self._add_mask_nodes(result, fixed_node, moving_node, add_mask_nodes)
            return result
        if report_folder is not None:
            write_folder_atomically(report_folder, lambda folder: self.write_report(
                folder, result, fixed, moving, fixed_node, moving_node, _report_parameters(options)))
        if cancelled is not None and cancelled():
            raise Cancelled("registration cancelled")
        self._add_mask_nodes(result, fixed_node, moving_node, add_mask_nodes)
        self._store_region(result, fixed_node, registered_region, add_registered_region)
        if output_transform is not None:
            _take_out_of_chain(moving_node, output_transform)
        result.transform_node = self._store_transform(result, fixed_node, moving_node, output_transform,
                                                      grid_transform)
        if output_volume is not None:
            # in the moving volume's pixel type, as elastix writes its result (float would double its size)
            update_volume_from_sitk(output_volume, resample_on_grid(moving, fixed, result.transform,
                                                                    pixel_type=moving.GetPixelID()))
        if apply_to_moving or harden:
            _apply_on_top(moving_node, result.transform_node)
        if harden:
            self.context.transforms.hardenTransform(moving_node)
        return result

    def _mask_image(self, node) -> sitk.Image | None:
        return None if node is None or isinstance(node, sitk.Image) else mask_image(self.context, node)

    def _store_region(self, result: SceneRegistrationResult, fixed_node, registered_region, add: bool) -> None:
        if result.crop_region is None:
            return
        if registered_region is not None:
            set_roi_corners(registered_region, result.crop_region)
            result.registered_region_node = registered_region
        elif add:
            result.registered_region_node = roi_from_corners(self.context, result.crop_region,
                                                             f"{fixed_node.GetName()} region")

    def _add_mask_nodes(self, result: SceneRegistrationResult, fixed_node, moving_node, add: bool) -> None:
        if add and result.fixed_mask is not None:
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
                            log_bias_fields=registration.log_bias_fields, **ground_truth)
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
