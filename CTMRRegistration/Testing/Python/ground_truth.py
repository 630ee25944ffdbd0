"""Ground truth for the registration stages, shared by the tests and bench/.

Known rigid moves: `move_header` moves an image's header by a pose, so the registration to it is known.

Synthetic known deformations: the MR is resampled through a known smooth warp W (anisotropic scaling about
the object's centre, of the size the porcine phantom shows between its scans, plus a random cubic B-spline of
a few millimetres), W mapping the deformed MR's physical points to the original MR's. If R0 registers
CT -> MR and R1 registers CT -> deformed MR, a stage that recovers the warp gives W(R1(x)) = R0(x) for every
CT point x: the error is |W(R1(x)) - R0(x)| in millimetres, over points inside the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from CTMRRegistrationLib.core.geometry import p95, transform_points
from CTMRRegistrationLib.core.masks import foreground_mask

PHANTOM_SCALING = (0.975, 1.0, 1.03)  # x narrower, z longer (LPS axes), as the phantom's MR vs its CT
WARP_MESH = (3, 3, 3)  # B-spline mesh cells over the MR's object box: control points ~50-80 mm apart
WARP_MM = 4.0  # the largest B-spline displacement inside the object


def move_header(image: sitk.Image, pose: np.ndarray) -> sitk.Image:
    """The same voxels with a header moved by `pose`: each voxel's physical point p becomes pose(p)."""
    moved = sitk.Image(image)
    moved.SetDirection((pose[:3, :3] @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    moved.SetOrigin(transform_points(pose, np.asarray([image.GetOrigin()]))[0].tolist())
    return moved


@dataclass
class SyntheticWarp:
    """A known warp of an image: `warp` maps deformed-image points to original-image points."""

    warp: sitk.Transform
    deformed: sitk.Image

    def map_back(self, points: np.ndarray) -> np.ndarray:
        """W(points): deformed-image points -> original-image points."""
        return np.array([self.warp.TransformPoint(p.tolist()) for p in np.asarray(points, dtype=float)])


def _object_box(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    voxels = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1].astype(float)
    corners = np.array([mask.TransformContinuousIndexToPhysicalPoint(v.tolist())
                        for v in (voxels.min(axis=0), voxels.max(axis=0))])
    return corners.min(axis=0), corners.max(axis=0)


def synthetic_warp(image: sitk.Image, modality: str, seed: int, scaling=PHANTOM_SCALING,
                   warp_mm: float = WARP_MM) -> SyntheticWarp:
    """`image` deformed by a known warp: scaling about its object's centre, then a smooth random B-spline
    whose largest displacement over the object is `warp_mm`. Deterministic for a given seed."""
    low, high = _object_box(foreground_mask(image, modality))
    centre = (low + high) / 2.0
    scale = sitk.ScaleTransform(3, [float(s) for s in scaling])
    scale.SetCenter(centre.tolist())
    margin = 0.1 * (high - low)
    domain = sitk.Image([8, 8, 8], sitk.sitkUInt8)
    domain.SetOrigin((low - margin).tolist())
    domain.SetSpacing(((high - low + 2 * margin) / 7.0).tolist())
    bspline = sitk.BSplineTransformInitializer(domain, list(WARP_MESH), 3)
    coefficients = np.random.default_rng(seed).normal(size=len(bspline.GetParameters()))
    bspline.SetParameters(coefficients.tolist())
    samples = np.random.default_rng(seed).uniform(low, high, size=(2000, 3))
    largest = max(np.linalg.norm(np.subtract(bspline.TransformPoint(p.tolist()), p)) for p in samples)
    bspline.SetParameters((coefficients * warp_mm / largest).tolist())
    warp = sitk.CompositeTransform([scale, bspline])  # W(y) = scale(bspline(y))
    background = float(sitk.GetArrayViewFromImage(image).min())
    deformed = sitk.Resample(image, image, warp, sitk.sitkLinear, background, image.GetPixelID())
    return SyntheticWarp(warp, deformed)


def mapped(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.array([transform.TransformPoint(p.tolist()) for p in np.asarray(points, dtype=float)])


def warp_recovery_errors(original: sitk.Transform, deformed: sitk.Transform, warp: SyntheticWarp,
                         points: np.ndarray) -> np.ndarray:
    """|W(deformed(x)) - original(x)| (mm) at each fixed point x: how far the registration to the deformed
    image is from the registration to the original one composed with the known warp."""
    return np.linalg.norm(warp.map_back(mapped(deformed, points)) - mapped(original, points), axis=1)


def error_summary(errors: np.ndarray) -> dict:
    """Mean, median, 95th percentile and maximum of distances (mm)."""
    errors = np.asarray(errors, dtype=float)
    return {"mean": round(float(errors.mean()), 2), "median": round(float(np.median(errors)), 2),
            "p95": round(p95(errors), 2), "max": round(float(errors.max()), 2)}
