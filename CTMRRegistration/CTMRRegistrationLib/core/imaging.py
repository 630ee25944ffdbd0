"""Image preparation shared by the stages: checks, modality, working and coarse resolutions."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputError

MODALITIES = ("CT", "MR")
MIN_VOXELS_PER_AXIS = 4
MIN_EXTENT_MM = 16.0  # the pose search smooths at 5 mm: thinner images (found: 6 slices of 2 mm) break it


def check_volume(image: sitk.Image, role: str) -> None:
    """Raise InputError unless `image` is a non-empty, non-constant 3-D scalar image with enough slices."""
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise InputError(f"the {role} image is not 3-D (size {'x'.join(map(str, image.GetSize()))})")
    extents = [n * s for n, s in zip(image.GetSize(), image.GetSpacing())]
    if min(image.GetSize()) < MIN_VOXELS_PER_AXIS or min(extents) < MIN_EXTENT_MM:
        raise InputError(f"the {role} image is too thin (size {'x'.join(map(str, image.GetSize()))}, "
                         f"{min(extents):.3g} mm): registration needs at least {MIN_VOXELS_PER_AXIS} slices and "
                         f"{MIN_EXTENT_MM:g} mm along every axis")
    if image.GetNumberOfComponentsPerPixel() != 1:
        components = image.GetNumberOfComponentsPerPixel()
        raise InputError(f"the {role} image has {components} components; give a scalar volume")
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"the {role} image contains NaN or infinite values")
    if array.min() == array.max():
        raise InputError(f"the {role} image is empty (every voxel is {array.min()})")


DICOM_MODALITY_TAG = "0008|0060"


def guess_modality(image: sitk.Image) -> str:
    """'CT' or 'MR': the DICOM Modality tag when the image carries one, else whether intensities look
    like Hounsfield units (air near -1000)."""
    if image.HasMetaDataKey(DICOM_MODALITY_TAG):
        tag = image.GetMetaData(DICOM_MODALITY_TAG).strip().upper()
        if tag in MODALITIES:
            return tag
    array = sitk.GetArrayViewFromImage(image)
    sample = array.ravel()[:: max(1, array.size // 200_000)]
    low, high = np.percentile(sample, [1, 99])
    return "CT" if low < -500 and high > -200 else "MR"


def shrink_to_spacing(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Average whole blocks of voxels (BinShrink) so that no spacing is finer than about `spacing_mm`."""
    factors = [max(1, int(spacing_mm / s)) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def own_copy(image: sitk.Image) -> sitk.Image:
    """A copy of `image` in a buffer of its own. SimpleITK images share buffers until written, and an array
    view re-buffers a shared image: two threads must not use one image."""
    copy = sitk.Image(image)
    copy.MakeUnique()
    return copy


def resample_isotropic(image: sitk.Image, spacing_mm: float, default_value: float | None = None) -> sitk.Image:
    """Smooth and resample to an isotropic grid covering the same physical box."""
    image = shrink_to_spacing(image, spacing_mm / 2)  # in its own pixel type: no full-size float copy
    sigmas = [max(0.0, (spacing_mm**2 - s**2) / 4) ** 0.5 for s in image.GetSpacing()]
    # one filter, float output smoothed in place; already coarser axes (thick slices) are left alone: a sigma
    # far below the spacing changes nothing, and ITK refuses 0
    image = sitk.SmoothingRecursiveGaussian(image, [max(sigma, 1e-6) for sigma in sigmas])
    size = [max(2, int(round(n * s / spacing_mm))) for n, s in zip(image.GetSize(), image.GetSpacing())]
    if default_value is None:
        default_value = float(np.min(sitk.GetArrayViewFromImage(image)))
    return sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), [spacing_mm] * 3,
        image.GetDirection(), default_value, sitk.sitkFloat32,
    )


def resample_on_grid(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform | None = None,
                     interpolator: int = sitk.sitkLinear, background: float | None = None,
                     pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """`image` resampled on `grid` through the grid->image `transform` (any SimpleITK transform, composites
    included; default identity). Outside `image` the value is `background` (default its minimum: air for CT,
    background for MR)."""
    if background is None:
        background = float(np.min(sitk.GetArrayViewFromImage(image)))
    transform = sitk.CompositeTransform([transform]) if transform is not None else sitk.Transform()
    return sitk.Resample(image, grid, transform, interpolator, background, pixel_type)


def in_view_mask(grid: sitk.Image, moving: sitk.Image, transform: sitk.Transform | None = None,
                 margin_mm: float = 0.0) -> sitk.Image:
    """1 on the voxels of `grid` that the grid->moving `transform` maps at least about `margin_mm` inside
    `moving`'s field of view (uint8): where a partial moving image has data to compare."""
    support = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    support.CopyInformation(moving)
    mapped = resample_on_grid(support, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    radius = [int(round(margin_mm / spacing)) for spacing in grid.GetSpacing()]
    return sitk.BinaryErode(mapped, radius) if any(radius) else mapped


def intensity_window(image: sitk.Image, mask: sitk.Image | None, percent: float) -> tuple[float, float]:
    """The `percent` and 100 - `percent` percentiles of `image`'s values inside `mask` (the whole image
    without one, or when the mask is empty)."""
    values = sitk.GetArrayViewFromImage(image)
    if mask is not None and sitk.GetArrayViewFromImage(mask).any():
        values = values[sitk.GetArrayViewFromImage(mask) > 0]
    low, high = np.percentile(values, [percent, 100.0 - percent])
    return float(low), float(high)


def index_to_physical_matrix(image: sitk.Image) -> np.ndarray:
    """4x4 matrix from continuous index (i, j, k) to physical LPS coordinates."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def mask_points(mask: sitk.Image, count: int | None = None, seed: int = 0) -> np.ndarray:
    """Voxel centres (LPS, N x 3) inside `mask`; with `count`, at most that many drawn evenly (same `seed`,
    same points)."""
    voxels = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1].astype(float)
    if count is not None and len(voxels) > count:
        voxels = voxels[np.random.default_rng(seed).choice(len(voxels), count, replace=False)]
    matrix = index_to_physical_matrix(mask)
    return voxels @ matrix[:3, :3].T + matrix[:3, 3]


def physical_corners(image: sitk.Image, faces: bool = False) -> np.ndarray:
    """The 8 corner points (LPS) of the image's voxel-centre box (with `faces`, of its outer voxel faces), x
    varying slowest, then y, then z."""
    size = np.asarray(image.GetSize()) - 1
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * size
    if faces:
        corners = corners + np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)]) * 0.5
    matrix = index_to_physical_matrix(image)
    return corners @ matrix[:3, :3].T + matrix[:3, 3]
