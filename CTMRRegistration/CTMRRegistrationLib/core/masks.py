"""Foreground masks: the CT body without table, holder and air; the MR object without background; and the
user's masks combined with them."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputError


def _radius(image: sitk.Image, millimetres: float) -> list[int]:
    return [max(1, int(round(millimetres / s))) for s in image.GetSpacing()]


def _largest_component(mask: sitk.Image) -> sitk.Image:
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(labels == 1, sitk.sitkUInt8)


def _clean(mask: sitk.Image, opening_mm: float, closing_mm: float) -> sitk.Image:
    """Open away thin structures, keep the largest blob, close small gaps, fill interior holes."""
    mask = sitk.BinaryMorphologicalOpening(mask, _radius(mask, opening_mm))
    if not sitk.GetArrayViewFromImage(mask).any():
        return mask
    mask = _largest_component(mask)
    mask = sitk.BinaryMorphologicalClosing(mask, _radius(mask, closing_mm))
    return sitk.BinaryFillhole(mask)


def ct_body_mask(ct: sitk.Image, threshold_hu: float = -400.0, opening_mm: float = 6.0) -> sitk.Image:
    """Soft tissue and bone above `threshold_hu`; the opening removes table tops and holder walls
    thinner than about `opening_mm`."""
    return _clean(sitk.Cast(ct > threshold_hu, sitk.sitkUInt8), opening_mm, closing_mm=4.0)


def inside_by(mask: sitk.Image, margin_mm: float) -> sitk.Image:
    """1 on the voxels of `mask` at least `margin_mm` from its background (the image's edge is none), uint8."""
    distance = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=True, squaredDistance=False,
                                            useImageSpacing=True)
    return sitk.Cast(distance >= margin_mm, sitk.sitkUInt8)


CT_PADDING_BELOW_HU = -1100.0  # nothing scanned reads below air (-1000 HU); scanners pad with -2048 or -3024


def away_from_ct_padding(ct: sitk.Image, margin_mm: float) -> sitk.Image | None:
    """1 on the voxels of `ct` at least `margin_mm` from its padding (values below CT_PADDING_BELOW_HU, which
    scanners write outside the reconstruction circle), uint8; None when `ct` has no padding."""
    padding = sitk.Cast(ct < CT_PADDING_BELOW_HU, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(padding).any():
        return None
    distance = sitk.SignedMaurerDistanceMap(padding, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return sitk.Cast(distance > margin_mm, sitk.sitkUInt8)


def padding_values(image: sitk.Image, share: float = 0.5) -> list[float]:
    """Values that fill more than `share` of one of the image's six faces: constant (black or grey)
    borders left by resampling, cropping or the scanner."""
    array = sitk.GetArrayViewFromImage(image)
    found = set()
    for face in (array[0], array[-1], array[:, 0], array[:, -1], array[:, :, 0], array[:, :, -1]):
        values, counts = np.unique(face, return_counts=True)
        if counts.max() > share * face.size:
            found.add(float(values[counts.argmax()]))
    return sorted(found)


def mr_foreground_mask(mr: sitk.Image, fraction: float = 0.15, opening_mm: float = 4.0) -> sitk.Image:
    """Voxels brighter than `fraction` of the robust maximum (99th percentile) above the background,
    without constant (black or grey) padding borders, isolated bright noise or interior holes."""
    array = sitk.GetArrayViewFromImage(mr)
    valid = ~np.isin(array, padding_values(mr))
    low = array[valid].min() if valid.any() else array.min()
    signal = array[valid & (array > low)]
    high = np.percentile(signal, 99) if signal.size else array.max()
    foreground = (array > low + fraction * (high - low)) & valid
    mask = sitk.GetImageFromArray(foreground.astype(np.uint8))
    mask.CopyInformation(mr)
    return _clean(mask, opening_mm, closing_mm=6.0)


def foreground_mask(image: sitk.Image, modality: str) -> sitk.Image:
    return ct_body_mask(image) if modality == "CT" else mr_foreground_mask(image)


MASK_MODES = ("intersect", "replace")


def check_user_masks(fixed_mask, moving_mask, mode: str, use_masks: bool) -> None:
    """InputError for an unknown mode, or user masks while masks are switched off."""
    if mode not in MASK_MODES:
        raise InputError(f"unknown mask mode '{mode}' (use {' or '.join(MASK_MODES)})")
    if not use_masks and (fixed_mask is not None or moving_mask is not None):
        raise InputError("user masks restrict the metric, which masks switched off would ignore: keep masks on")


def combine_masks(automatic: sitk.Image, user: sitk.Image | None, mode: str, role: str) -> sitk.Image:
    """The automatic mask, intersected with or replaced by the user mask (non-zero voxels, resampled by nearest
    neighbour onto the automatic mask's grid in physical space). InputError when nothing is left."""
    if user is None:
        return automatic
    if user.GetDimension() != 3:
        raise InputError(f"the {role} mask is not 3-D")
    inside = sitk.Cast(sitk.Resample(sitk.Cast(user != 0, sitk.sitkUInt8), automatic, sitk.Transform(),
                                     sitk.sitkNearestNeighbor, 0), automatic.GetPixelID())
    combined = inside if mode == "replace" else sitk.And(automatic, inside)
    if not sitk.GetArrayViewFromImage(combined).any():
        where = "on its image" if mode == "replace" else "inside the image's automatic foreground"
        raise InputError(f"the {role} mask covers nothing {where}: check that it belongs to the {role} image")
    return combined
