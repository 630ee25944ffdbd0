"""Overlay pictures: fixed in magenta, moving in green, in three planes through the fixed object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.imaging import physical_corners, resample_on_grid

DISPLAY_PIXELS = 200


def display_grid(fixed: sitk.Image) -> sitk.Image:
    """An axis-aligned LPS grid with square pixels covering the fixed image's box."""
    corners = physical_corners(fixed)
    low, high = corners.min(axis=0), corners.max(axis=0)
    spacing = float((high - low).max() / DISPLAY_PIXELS)
    size = [max(2, int(np.ceil(extent / spacing)) + 1) for extent in high - low]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing([spacing] * 3)
    grid.SetOrigin(low.tolist())
    return grid


def normalise(array: np.ndarray) -> np.ndarray:
    low, high = np.percentile(array, [1, 99.5])
    return np.clip((array - low) / max(high - low, 1e-6), 0, 1)


def planes(volume: np.ndarray, index: tuple[int, int, int] | None = None) -> list[np.ndarray]:
    """Axial, coronal and sagittal planes (superior up) of a (z, y, x) volume through voxel `index` (z, y, x),
    by default its middle."""
    z, y, x = index if index is not None else (n // 2 for n in volume.shape)
    return [volume[z], volume[::-1, y, :], volume[::-1, :, x]]


def overlay_rgb(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> np.ndarray:
    """An RGB strip (axial, coronal, sagittal) of `moving` resampled by `transform` over `fixed`."""
    grid = display_grid(fixed)
    f = normalise(sitk.GetArrayFromImage(resample_on_grid(fixed, grid)))
    m = normalise(sitk.GetArrayFromImage(resample_on_grid(moving, grid, transform)))
    panels = []
    for fixed_plane, moving_plane in zip(planes(f), planes(m)):
        panels.append(np.stack([fixed_plane, moving_plane, fixed_plane], axis=-1))
    return side_by_side(panels)


def side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    """RGB panels (values 0..1) in one uint8 strip, top-aligned, 4 black pixels apart."""
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
    return (np.concatenate(padded, axis=1) * 255).astype(np.uint8)


def write_overlay_png(path, fixed: sitk.Image, moving: sitk.Image, rows: dict[str, sitk.Transform]) -> Path:
    """One strip per entry of `rows` (e.g. before / after), stacked top to bottom, as a PNG."""
    strips = [overlay_rgb(fixed, moving, transform) for transform in rows.values()]
    width = max(s.shape[1] for s in strips)
    picture = np.concatenate([np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0))) for s in strips], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(picture, isVector=True), str(path))
    return path
