"""Checks of the images' geometry and intensities that name what looks wrong, so that the pose search
does not read a problem of the inputs as a property of the moving image (e.g. a mirror flip)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError

MAX_SPACING_MM = 20.0
ORTHONORMAL_TOLERANCE = 1e-3
MIN_RECOGNISED_RANGE = 10.0  # CT spans about 1000 HU or more, MR a few hundred units at least


def check_geometry(image: sitk.Image, role: str) -> None:
    """InputError when the direction matrix is not orthonormal (sheared) or the voxels are too coarse."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if np.abs(direction.T @ direction - np.eye(3)).max() > ORTHONORMAL_TOLERANCE:
        raise InputError(f"the {role} image's direction matrix is not orthonormal (a sheared grid, e.g. a tilted "
                         "gantry): resample it onto an orthogonal grid first")
    spacing = image.GetSpacing()
    if max(spacing) > MAX_SPACING_MM:
        raise InputError(f"the {role} image's voxels are too coarse ({' x '.join(f'{s:g}' for s in spacing)} mm; at "
                         f"most {MAX_SPACING_MM:g} mm supported): check the spacing in its header")


def check_mirror_evidence(images: dict[str, sitk.Image], given_modalities: dict[str, str | None]) -> None:
    """Called when the pose search found the moving image mirrored: InputError when that finding may come from
    an image whose modality was guessed from intensities that look like no CT or MR (e.g. floats in [0, 1]),
    naming that image, instead of blaming the moving image's header."""
    for role, image in images.items():
        if given_modalities.get(role):
            continue
        array = sitk.GetArrayViewFromImage(image)
        low, high = float(array.min()), float(array.max())
        if high - low < MIN_RECOGNISED_RANGE:
            raise InputError(f"the {role} image's intensities span only [{low:.3g}, {high:.3g}]: its modality was not "
                             f"recognised, so the mirror test is unreliable; pass --{role}-modality CT or MR "
                             f"({role}_modality=)")
