"""Pictures of a registration for the eye: a checkerboard of the two images, a blended overlay (fixed in
magenta, moving in green) and the moving image's edge contours (yellow) on the fixed image, in axial,
coronal and sagittal planes through the fixed object's centre; one PNG strip per picture and transform
(e.g. before / after)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.imaging import resample_on_grid
from .overlay import display_grid, normalise, planes, side_by_side

KINDS = ("checkerboard", "blend", "contours")
CHECKERBOARD_SQUARE_MM = 20.0
CONTOUR_COLOUR = np.array([1.0, 0.85, 0.0])


def _on_grid(image: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> np.ndarray:
    return sitk.GetArrayFromImage(resample_on_grid(image, grid, transform))


def checkerboard_array(fixed: np.ndarray, moving: np.ndarray, spacing, square_mm: float = CHECKERBOARD_SQUARE_MM):
    """Cubes of `square_mm` alternating between two (z, y, x) volumes on one grid of `spacing` (x, y, z mm)."""
    squares = [(np.arange(size) * step // square_mm).astype(int) for size, step in zip(fixed.shape[::-1], spacing)]
    parity = (squares[2][:, None, None] + squares[1][None, :, None] + squares[0][None, None, :]) % 2
    return np.where(parity == 0, fixed, moving)


def checkerboard(fixed: sitk.Image, moving: sitk.Image, square_mm: float = CHECKERBOARD_SQUARE_MM) -> sitk.Image:
    """The checkerboard of `fixed` and `moving` (already on fixed's grid), each scaled to [0, 1] between its
    low and high percentiles so that CT and MR share one window: the panel's volume and the report's pictures."""
    board = checkerboard_array(normalise(sitk.GetArrayFromImage(fixed)), normalise(sitk.GetArrayFromImage(moving)),
                               fixed.GetSpacing(), square_mm)
    image = sitk.GetImageFromArray(board.astype(np.float32))
    image.CopyInformation(fixed)
    return image


def _grey(plane: np.ndarray) -> np.ndarray:
    return np.repeat(plane[..., None], 3, axis=2)


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
    if kind == "checkerboard":
        board = checkerboard_array(fixed_volume, moving_volume, grid.GetSpacing())
        return side_by_side([_grey(plane) for plane in planes(board, index)])
    draw = {"blend": _blend, "contours": _contours}[kind]
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
