"""Overlap and surface distances between segmentations, per label, before and after registration: Dice,
Hausdorff distance (max), HD95 and mean surface distance, by SimpleITK's LabelOverlapMeasures,
HausdorffDistance and SignedMaurerDistanceMap filters.

Surface distances go from the contour voxels of one label to the nearest contour voxel of the other
(6-connected contours); HD95 is the larger of the two directed 95th percentiles and the mean surface
distance averages both directions together. The moving labelmap is resampled onto the fixed one's grid
(nearest neighbour) through the fixed->moving transform.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError


def _binary(image: sitk.Image, label: int) -> sitk.Image:
    return sitk.Cast(image == label, sitk.sitkUInt8)


def _surface_distances(source: sitk.Image, target: sitk.Image) -> np.ndarray:
    """Distance (mm) from each contour voxel of `source` to the contour of `target` (binary images)."""
    contour = sitk.GetArrayFromImage(sitk.LabelContour(source, fullyConnected=False)) > 0
    distance = sitk.SignedMaurerDistanceMap(target, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return np.abs(sitk.GetArrayViewFromImage(distance)[contour])


def overlap_metrics(fixed_binary: sitk.Image, moving_binary: sitk.Image) -> dict:
    """Dice, Hausdorff, HD95 and mean surface distance (mm) of two binary images on the same grid; the
    distances are None when either image is empty."""
    fixed_binary, moving_binary = (sitk.Cast(image > 0, sitk.sitkUInt8) for image in (fixed_binary, moving_binary))
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(fixed_binary, moving_binary)
    empty = not (sitk.GetArrayViewFromImage(fixed_binary).any() and sitk.GetArrayViewFromImage(moving_binary).any())
    metrics = {"dice": round(overlap.GetDiceCoefficient(), 4) if not empty else 0.0}
    if empty:
        return metrics | {"hausdorff_mm": None, "hd95_mm": None, "mean_surface_mm": None}
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(fixed_binary, moving_binary)
    forward = _surface_distances(fixed_binary, moving_binary)
    backward = _surface_distances(moving_binary, fixed_binary)
    return metrics | {
        "hausdorff_mm": round(hausdorff.GetHausdorffDistance(), 3),
        "hd95_mm": round(float(max(np.percentile(forward, 95), np.percentile(backward, 95))), 3),
        "mean_surface_mm": round(float(np.concatenate([forward, backward]).mean()), 3),
    }


def label_values(labelmap: sitk.Image) -> list[int]:
    """The non-zero label values present in a labelmap."""
    return [int(v) for v in np.unique(sitk.GetArrayViewFromImage(labelmap)) if v != 0]


def segmentation_metrics(
    fixed_labels: sitk.Image, moving_labels: sitk.Image, transform: sitk.Transform | None = None,
    names: dict[int, str] | None = None,
) -> dict[str, dict]:
    """Per label present in both labelmaps: overlap_metrics after resampling the moving labelmap onto the
    fixed grid through `transform` (fixed->moving; None: the headers as they are)."""
    resampled = sitk.Resample(moving_labels, fixed_labels, transform or sitk.Transform(), sitk.sitkNearestNeighbor,
                              0, moving_labels.GetPixelID())
    shared = sorted(set(label_values(fixed_labels)) & set(label_values(moving_labels)))
    if not shared:
        raise InputError("the fixed and moving segmentations share no label value (or segment name)")
    names = names or {}
    return {names.get(label, str(label)): overlap_metrics(_binary(fixed_labels, label), _binary(resampled, label))
            for label in shared}


def relabel_by_name(moving: sitk.Image, moving_names: dict[int, str], fixed_names: dict[int, str]) -> sitk.Image:
    """The moving labelmap with its values changed so that segments of the same name share a value. Two
    single-segment labelmaps with different names (e.g. RTSTRUCTs 'GTV_CT' and 'GTV_MR') are paired."""
    if len(fixed_names) == len(moving_names) == 1 and set(fixed_names.values()) != set(moving_names.values()):
        moving_names = {value: next(iter(fixed_names.values())) for value in moving_names}
    value_of = {name: value for value, name in fixed_names.items()}
    mapping = {value: value_of[name] if name in value_of else 0 for value, name in moving_names.items()}
    return sitk.ChangeLabel(moving, changeMap={float(k): float(v) for k, v in mapping.items() if k != v})
