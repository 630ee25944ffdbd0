"""Foreground masks: the CT body without table, holder and air; the MR object without background."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


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


def mr_foreground_mask(mr: sitk.Image, fraction: float = 0.15, opening_mm: float = 4.0) -> sitk.Image:
    """Voxels brighter than `fraction` of the robust maximum (99th percentile), with black or
    constant borders and isolated bright noise removed."""
    array = sitk.GetArrayViewFromImage(mr)
    high = np.percentile(array[array > array.min()], 99) if (array > array.min()).any() else array.max()
    threshold = array.min() + fraction * (high - array.min())
    return _clean(sitk.Cast(mr > threshold, sitk.sitkUInt8), opening_mm, closing_mm=6.0)


def foreground_mask(image: sitk.Image, modality: str) -> sitk.Image:
    return ct_body_mask(image) if modality == "CT" else mr_foreground_mask(image)
