"""Landmark registration on point lists and MRML markups, and landmarks as the start pose of the intensity
registration.

Markups are read in world coordinates (their parent transforms applied) except for the output transform's
own effect: a list placed under the output transform, to watch it move, does not feed the result back into
the next fit. Linear results go into a linear transform node (exact matrix); a thin-plate spline goes into
a transform node as an exact vtkThinPlateSplineTransform ("from parent", fixed -> moving, like the library's
resampling transforms).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonTransforms import vtkAbstractTransform, vtkMatrixToLinearTransform, vtkThinPlateSplineTransform

from ..core.errors import InputError
from ..core.geometry import RAS_FROM_LPS, flip_ras_lps, sitk_from_matrix
from ..landmarks.correspondence import DirectionCheck, SwapCheck, direction_check, find_swapped_pairs, order_by_labels
from ..landmarks.fit import LandmarkTransform, fit_landmark_transform, landmark_matrix
from ..landmarks.fit_errors import LandmarkErrors, TargetErrors, landmark_errors, target_errors
from ..registration.pipeline import ProgressCallback, RegistrationOptions, RegistrationResult, register_images
from .node_io import load_markups
from .nodes import (
    labels_from_markups,
    parent_transforms,
    points_from_markups,
    set_linear_transform_node_from_sitk,
    vtk_matrix_from_numpy,
)
from .scene_registration import renamed_keywords


@dataclass
class LandmarkRegistrationResult:
    """A landmark fit with its errors and the checks of the lists' correspondence."""

    transform: LandmarkTransform
    errors: LandmarkErrors
    swap_check: SwapCheck
    direction: DirectionCheck
    labels: list[str]
    targets: TargetErrors | None = None
    warnings: list[str] = field(default_factory=list)
    transform_node: object = None

    def as_dict(self) -> dict:
        """JSON form: transform (4x4 fixed->moving LPS; the affine part for tps), errors, checks, warnings."""
        report = {
            "kind": self.transform.kind,
            "transform": self.transform.matrix.round(9).tolist(),
            "transform_convention": "fixed->moving physical points, LPS (ITK resampling transform)",
            "labels": self.labels,
            **self.errors.as_dict(),
            "direction_check": self.direction.as_dict(),
            "swapped_pairs": [[self.labels[i], self.labels[j]] for i, j in self.swap_check.swapped_pairs],
            "warnings": self.warnings,
        }
        if self.targets is not None:
            report.update(self.targets.as_dict())
        return report


def register_points(
    fixed_points, moving_points, kind: str = "rigid", fixed_labels: list[str] | None = None,
    moving_labels: list[str] | None = None, fixed_targets=None, moving_targets=None,
) -> LandmarkRegistrationResult:
    """Fit `kind` to paired (N, 3) LPS landmarks, pairing by label when both lists carry the same labels;
    errors per point, leave-one-out errors, swap and direction checks, and TRE when targets are given."""
    fixed, moving = np.asarray(fixed_points, dtype=float), np.asarray(moving_points, dtype=float)
    fixed_labels = list(fixed_labels) if fixed_labels is not None else [""] * len(fixed)
    moving_labels = list(moving_labels) if moving_labels is not None else [""] * len(moving)
    warnings = []
    if len(fixed) == len(moving):
        order, note = order_by_labels(fixed_labels, moving_labels)
        if order is not None:
            moving = moving[order]
        if note:
            warnings.append(note)
    transform = fit_landmark_transform(fixed, moving, kind)
    swaps = find_swapped_pairs(fixed, moving, kind)
    direction = direction_check(fixed, moving, kind)
    labels = [label or f"#{index + 1}" for index, label in enumerate(fixed_labels)]
    warnings += swaps.warnings(labels) + direction.warnings()
    result = LandmarkRegistrationResult(transform, landmark_errors(transform, fixed, moving), swaps, direction, labels,
                                        warnings=warnings)
    if fixed_targets is not None and moving_targets is not None:
        result.targets = target_errors(transform, fixed_targets, moving_targets)
    return result


def vtk_transform(fit: LandmarkTransform) -> vtkAbstractTransform:
    """The same fixed->moving mapping in RAS for MRML: a vtkMatrixToLinearTransform or an exact
    vtkThinPlateSplineTransform (use it as a transform node's "from parent" transform)."""
    if fit.is_linear:
        linear = vtkMatrixToLinearTransform()
        linear.SetInput(vtk_matrix_from_numpy(flip_ras_lps(fit.matrix)))
        return linear
    source, target = vtkPoints(), vtkPoints()
    flip = RAS_FROM_LPS[:3, :3].diagonal()
    for fixed_point, moving_point in zip(fit.centres, fit.transform_points(fit.centres)):
        source.InsertNextPoint(*(fixed_point * flip))
        target.InsertNextPoint(*(moving_point * flip))
    spline = vtkThinPlateSplineTransform()
    spline.SetBasisToR()
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    spline.Update()
    return spline


def set_transform_node_from_landmarks(transform_node, transform: LandmarkTransform) -> None:
    """Make `transform_node` move the moving side onto the fixed side: a linear fit as its exact matrix,
    a thin-plate spline as an exact vtkThinPlateSplineTransform (from parent = fixed -> moving)."""
    if transform.is_linear:
        set_linear_transform_node_from_sitk(transform_node, sitk_from_matrix(transform.matrix))
    else:
        transform_node.SetAndObserveTransformFromParent(vtk_transform(transform))


def register_landmarks(
    context, fixed_markups, moving_markups, kind: str = "rigid", output_transform=None,
    fixed_targets=None, moving_targets=None, **deprecated,
) -> LandmarkRegistrationResult:
    """Register two markups point lists (and score optional target lists) into a transform node.

    kind: "rigid", "similarity", "affine" or "tps" (thin-plate spline).
    output_transform: the node to write into (created when not given: linear for rigid, similarity and
        affine, general for tps); once applied it maps the moving side onto the fixed side.
    fixed_targets, moving_targets: independent point lists whose error before and after is reported.
    `result.transform` is the fixed->moving LPS mapping."""
    output_transform_node = renamed_keywords(deprecated).get("output_transform", output_transform)
    scene = context.scene
    if kind == "tps" and output_transform_node is not None and output_transform_node.IsA("vtkMRMLLinearTransformNode"):
        raise InputError("a thin-plate spline cannot go into a linear transform node: give a general transform node")
    if output_transform_node is None:
        class_name = "vtkMRMLTransformNode" if kind == "tps" else "vtkMRMLLinearTransformNode"
        output_transform_node = scene.AddNewNodeByClass(
            class_name, scene.GenerateUniqueName(f"{moving_markups.GetName()} to {fixed_markups.GetName()}"))
    inside = [node.GetName() for node in (fixed_markups, moving_markups)
              if output_transform_node in parent_transforms(node)]
    targets = {}
    for role, node in (("fixed", fixed_targets), ("moving", moving_targets)):
        targets[role] = None if node is None else points_from_markups(node, output_transform_node)
    result = register_points(
        points_from_markups(fixed_markups, output_transform_node),
        points_from_markups(moving_markups, output_transform_node),
        kind, labels_from_markups(fixed_markups), labels_from_markups(moving_markups),
        targets["fixed"], targets["moving"],
    )
    if inside:
        result.warnings.append(f"{' and '.join(inside)} sit(s) under the output transform: positions were read "
                               "without it, so the result does not depend on its previous value")
    set_transform_node_from_landmarks(output_transform_node, result.transform)
    result.transform_node = output_transform_node
    return result


def landmarks_from_file(context, path) -> tuple[np.ndarray, list[str]]:
    """World positions (LPS, N x 3) and labels of the control points in a markups file (.mrk.json, .fcsv)."""
    node = load_markups(context, path)
    return points_from_markups(node), labels_from_markups(node)


def landmark_initial_matrix(fixed_points, moving_points) -> np.ndarray:
    """The rigid fixed->moving 4x4 LPS start pose from paired landmarks (at least 3, not collinear)."""
    return landmark_matrix(fixed_points, moving_points, "rigid")


def register_images_from_landmarks(
    fixed: sitk.Image, moving: sitk.Image, fixed_points, moving_points,
    options: RegistrationOptions | None = None, progress: ProgressCallback | None = None,
) -> RegistrationResult:
    """Intensity registration started from the landmarks' rigid pose instead of the global search: one
    fixed->moving transform (result.transform), the landmark pose in result.initial_transform."""
    initial = landmark_initial_matrix(fixed_points, moving_points)
    result = register_images(fixed, moving, replace(options or RegistrationOptions(), initial_matrix=initial),
                             progress=progress)
    result.metrics["initialization"] = {"method": "landmarks", "pairs": len(np.asarray(fixed_points))}
    return result
