"""Shared fixtures: a headless MRML scene, the bundled porcine pair, poses and error measures."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, transform_points
from CTMRRegistrationLib.core.masks import ct_body_mask
from CTMRRegistrationLib.mrml.scene import create_headless_context


@pytest.fixture
def context():
    return create_headless_context()


@pytest.fixture(scope="session")
def sample_ct() -> sitk.Image:
    return sitk.ReadImage(str(resources.sample_ct_path()))


@pytest.fixture(scope="session")
def sample_mr() -> sitk.Image:
    return sitk.ReadImage(str(resources.sample_mr_path()))


@pytest.fixture(scope="session")
def reference_ct_to_mr() -> np.ndarray:
    """Reference fixed-CT -> moving-MR matrix (LPS): a Mattes-MI optimum, not ground truth."""
    return matrix_from_sitk(sitk.ReadTransform(str(resources.sample_reference_transform_path())))


@pytest.fixture(scope="session")
def ct_object_points(sample_ct) -> np.ndarray:
    """About 4000 points (LPS) inside the CT object, where alignment errors are measured."""
    mask = sitk.GetArrayFromImage(ct_body_mask(sample_ct))  # a copy: a view would outlive the temporary mask
    voxels = np.argwhere(mask > 0)[:, ::-1].astype(float)
    voxels = voxels[np.random.default_rng(0).choice(len(voxels), 4000, replace=False)]
    return np.array([sample_ct.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])


def rigid_pose(degrees, millimetres, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rotation by Euler angles (degrees, xyz) about `centre`, then a translation (mm)."""
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix()
    centre = np.asarray(centre, dtype=float)
    matrix[:3, 3] = centre - matrix[:3, :3] @ centre + np.asarray(millimetres, dtype=float)
    return matrix


def move_header(image: sitk.Image, pose: np.ndarray) -> sitk.Image:
    """The same voxels with a header moved by `pose`: each voxel's physical point p becomes pose(p)."""
    moved = sitk.Image(image)
    spacing = np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    moved.SetDirection((pose[:3, :3] @ direction).ravel().tolist())
    moved.SetOrigin(transform_points(pose, np.asarray([image.GetOrigin()]))[0].tolist())
    moved.SetSpacing(spacing.tolist())
    return moved


def p95_distance(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> float:
    """95th percentile of |a(p) - b(p)| over `points`, for two 4x4 point mappings."""
    return float(np.percentile(np.linalg.norm(transform_points(a, points) - transform_points(b, points), axis=1), 95))
