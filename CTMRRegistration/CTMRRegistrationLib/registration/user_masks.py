"""Masks given by the user (a region that matters, or the complement of one to ignore), combined with the
automatic foreground masks that restrict the elastix metric."""

from __future__ import annotations

import SimpleITK as sitk

from ..core.errors import InputError

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
