"""Sets of 3-D rotations for a pose search, and the angle between two rotations."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

_SUPER_FIBONACCI_PHI = np.sqrt(2.0)
_SUPER_FIBONACCI_PSI = 1.533751168755204288118041


def axis_aligned_rotations() -> np.ndarray:
    """The 24 rotations that map the coordinate axes onto themselves, as (24, 3, 3)."""
    return Rotation.create_group("O").as_matrix()


def uniform_rotations(count: int) -> np.ndarray:
    """`count` rotations spread evenly over SO(3) (super-Fibonacci spirals, Alexa 2022), as (count, 3, 3)."""
    s = np.arange(count) + 0.5
    r, big_r = np.sqrt(s / count), np.sqrt(1.0 - s / count)
    alpha, beta = 2.0 * np.pi * s / _SUPER_FIBONACCI_PHI, 2.0 * np.pi * s / _SUPER_FIBONACCI_PSI
    quaternions = np.stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], 1)
    return Rotation.from_quat(quaternions).as_matrix()


def search_rotations(count: int) -> np.ndarray:
    """The axis-aligned rotations followed by `count` evenly spread ones."""
    return np.concatenate([axis_aligned_rotations(), uniform_rotations(count)])


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees of the rotation taking the linear part of `a` to that of `b` (3x3 or 4x4)."""
    cosine = (np.trace(a[:3, :3].T @ b[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
