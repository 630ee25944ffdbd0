"""Pictures of a registration for the eye: a checkerboard of the two images, a blended overlay (fixed in
magenta, moving in green) and the moving image's edge contours (yellow) on the fixed image, in axial,
coronal and sagittal planes through the fixed object's centre; one PNG strip per picture and transform
(e.g. before / after)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .overlay import display_grid, normalise, planes, side_by_side

KINDS = ("checkerboard", "blend", "contours")
SQUARE_MM = 16.0
CONTOUR_COLOUR = np.array([1.0, 0.85, 0.0])


def _on_grid(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> np.ndarray:
    low = float(sitk.GetArrayViewFromImage(image).min())
    resampled = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.CompositeTransform([transform]),
                              sitk.sitkLinear, low, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def _checkerboard(fixed: np.ndarray, moving: np.ndarray, square: int) -> np.ndarray:
    rows, columns = np.indices(fixed.shape)
    grey = np.where((rows // square + columns // square) % 2 == 0, fixed, moving)
    return np.repeat(grey[..., None], 3, axis=2)


def _blend(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    return np.stack([fixed, moving, fixed], axis=-1)


def _contours(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Canny edges of the moving plane drawn over the grey fixed plane."""
    plane = sitk.GetImageFromArray(moving.astype(np.float32))
    gradient = sitk.GetArrayFromImage(sitk.GradientMagnitudeRecursiveGaussian(plane, 1.0))
    upper = float(np.percentile(gradient, 90))
    edges = sitk.GetArrayFromImage(sitk.CannyEdgeDetection(plane, upper / 2, upper, [1.0, 1.0])) > 0
    picture = np.repeat(fixed[..., None], 3, axis=2)
    picture[edges] = CONTOUR_COLOUR
    return picture


def picture_strip(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, kind: str,
                  centre: np.ndarray) -> np.ndarray:
    """One RGB strip (axial, coronal, sagittal through the LPS point `centre`) of picture `kind`."""
    grid = display_grid(fixed)
    fixed_volume = normalise(_on_grid(fixed, grid, sitk.Transform()))
    moving_volume = normalise(_on_grid(moving, grid, transform))
    index = grid.TransformPhysicalPointToIndex([float(c) for c in centre])[::-1]
    index = tuple(int(np.clip(i, 0, n - 1)) for i, n in zip(index, fixed_volume.shape))
    square = max(2, int(round(SQUARE_MM / grid.GetSpacing()[0])))
    draw = {"checkerboard": lambda f, m: _checkerboard(f, m, square), "blend": _blend, "contours": _contours}[kind]
    return side_by_side([draw(f, m) for f, m in zip(planes(fixed_volume, index), planes(moving_volume, index))])


def write_qa_pictures(directory, fixed: sitk.Image, moving: sitk.Image, rows: dict[str, sitk.Transform],
                      centre: np.ndarray) -> dict[str, Path]:
    """PNG files `<row>_<kind>.png` in `directory` for every row (name -> fixed->moving transform) and
    kind; returns them keyed `<row>_<kind>`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for row, transform in rows.items():
        for kind in KINDS:
            path = directory / f"{row}_{kind}.png"
            strip = picture_strip(fixed, moving, transform, kind, centre)
            sitk.WriteImage(sitk.GetImageFromArray(strip, isVector=True), str(path))
            written[f"{row}_{kind}"] = path
    return written
