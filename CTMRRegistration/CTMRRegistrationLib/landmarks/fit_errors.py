"""How well landmarks register: fiducial registration error (FRE) per point and RMS, leave-one-out errors
(each point predicted by a fit to the others: an estimate of target error from the landmarks alone), true
target registration error (TRE) against an independent pair of target lists, and Fitzpatrick's
predictions of FRE and TRE from the fiducial localisation error (FLE) and the landmarks' layout.

Errors are distances in the moving space (mm). FRE says how well the model fits the points it was fitted
to, not how accurate the registration is elsewhere: TRE and leave-one-out errors do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import CTMRError, InputError
from ..core.geometry import distances
from .fit import LandmarkTransform, as_points, fit_landmark_transform

PARAMETERS = {"rigid": 6, "similarity": 7, "affine": 12}


def _rms(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")


def _rounded(values: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in values]


def leave_one_out_errors(fixed_points, moving_points, kind: str = "rigid") -> np.ndarray:
    """|T_i(f_i) - m_i| where T_i is fitted without pair i; NaN where the other pairs cannot be fitted."""
    fixed, moving = as_points(fixed_points, "fixed"), as_points(moving_points, "moving")
    errors = np.full(len(fixed), np.nan)
    for index in range(len(fixed)):
        keep = np.arange(len(fixed)) != index
        try:
            transform = fit_landmark_transform(fixed[keep], moving[keep], kind)
        except CTMRError:
            continue
        errors[index] = distances(transform, fixed[index:index + 1], moving[index:index + 1])[0]
    return errors


@dataclass
class LandmarkErrors:
    """Per-point FRE and leave-one-out errors (mm) of one landmark fit."""

    fre: np.ndarray
    leave_one_out: np.ndarray

    @property
    def fre_rms(self) -> float:
        return _rms(self.fre)

    @property
    def leave_one_out_rms(self) -> float:
        return _rms(self.leave_one_out)

    def as_dict(self) -> dict:
        return {
            "fre_mm": _rounded(self.fre),
            "fre_rms_mm": round(self.fre_rms, 4),
            "fre_max_mm": round(float(self.fre.max()), 4),
            "leave_one_out_mm": _rounded(self.leave_one_out),
            "leave_one_out_rms_mm": None if np.isnan(self.leave_one_out_rms) else round(self.leave_one_out_rms, 4),
        }


def landmark_errors(transform: LandmarkTransform, fixed_points, moving_points) -> LandmarkErrors:
    """FRE of `transform` on the landmarks it was fitted to, and leave-one-out errors of its kind."""
    return LandmarkErrors(
        fre=distances(transform, fixed_points, moving_points),
        leave_one_out=leave_one_out_errors(fixed_points, moving_points, transform.kind),
    )


@dataclass
class TargetErrors:
    """Target registration error per target pair (mm): independent points not used by the fit."""

    per_point: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.per_point.mean())

    @property
    def max(self) -> float:
        return float(self.per_point.max())

    @property
    def rms(self) -> float:
        return _rms(self.per_point)

    def as_dict(self) -> dict:
        return {"tre_mm": _rounded(self.per_point), "tre_mean_mm": round(self.mean, 4),
                "tre_max_mm": round(self.max, 4), "tre_rms_mm": round(self.rms, 4)}


def target_errors(transform, fixed_targets, moving_targets) -> TargetErrors:
    """TRE of any fixed->moving transform (matrix, SimpleITK or landmark) at paired target points."""
    fixed, moving = as_points(fixed_targets, "fixed target"), as_points(moving_targets, "moving target")
    if len(fixed) != len(moving) or len(fixed) == 0:
        raise InputError(f"the target lists must pair up: {len(fixed)} fixed, {len(moving)} moving points")
    return TargetErrors(distances(transform, fixed, moving))


def expected_fre_rms(fle_rms: float, count: int, kind: str = "rigid") -> float:
    """Expected RMS FRE of `count` landmarks with RMS localisation error `fle_rms` (both lists together):
    <FRE^2> = (1 - p / 3N) <FLE^2> for a p-parameter fit (Fitzpatrick et al. 1998; exact for affine)."""
    return float(fle_rms * np.sqrt(max(0.0, 1.0 - PARAMETERS[kind] / (3.0 * count))))


def fle_from_fre(fre_rms: float, count: int, kind: str = "rigid") -> float:
    """The RMS localisation error that explains an observed RMS FRE (inverse of expected_fre_rms)."""
    remaining = 1.0 - PARAMETERS[kind] / (3.0 * count)
    return float(fre_rms / np.sqrt(remaining)) if remaining > 0 else float("nan")


def predicted_tre_rms(fixed_points, targets, fle_rms: float) -> np.ndarray:
    """Expected RMS TRE of a rigid landmark fit at each target (Fitzpatrick, West and Maurer 1998):
    <TRE^2(r)> = <FLE^2>/N (1 + 1/3 sum_k d_k^2 / f_k^2), with d_k the target's distance from the k-th
    principal axis of the landmarks and f_k the landmarks' RMS distance from that axis."""
    fixed, targets = as_points(fixed_points, "fixed"), as_points(targets, "target")
    centre = fixed.mean(axis=0)
    _, _, axes = np.linalg.svd(fixed - centre)
    along_fiducials, along_targets = (fixed - centre) @ axes.T, (targets - centre) @ axes.T
    total = np.zeros(len(targets))
    for k in range(3):
        others = [j for j in range(3) if j != k]
        f_squared = np.mean((along_fiducials[:, others] ** 2).sum(axis=1))
        total += (along_targets[:, others] ** 2).sum(axis=1) / f_squared
    return fle_rms * np.sqrt((1.0 + total / 3.0) / len(fixed))

