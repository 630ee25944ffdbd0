"""Shared fixtures: a headless MRML scene, the bundled porcine pair, poses and error measures."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from ground_truth import move_header as move_header  # the tests import it from here, as bench/ from ground_truth
from scipy.spatial.transform import Rotation

from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import matrix_from_sitk
from CTMRRegistrationLib.core.geometry import p95_distance as p95_distance  # the tests import it from here
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
