"""Capture from far poses: the bundled MR's header is moved by a known rigid pose and the result must
land on the reference transform composed with that pose (p95 < 5 mm over the CT object; failures land
tens of millimetres off). Poses include 180 degrees about each axis, 90-degree combinations and a
250 mm offset: none is within reach of a local optimiser."""

import numpy as np
import pytest
from conftest import move_header, p95_distance, rigid_pose

from CTMRRegistrationLib import RegistrationOptions, register_images

pytestmark = pytest.mark.slow  # real registrations of the bundled pair

OPTIONS = RegistrationOptions(threads=2)
OFFSET_250_MM = 250.0 * np.array([0.6, -0.72, 0.35]) / np.linalg.norm([0.6, -0.72, 0.35])
POSES = {
    "180 about x": ((180.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "180 about y": ((0.0, 180.0, 0.0), (0.0, 0.0, 0.0)),
    "180 about z": ((0.0, 0.0, 180.0), (0.0, 0.0, 0.0)),
    "90 x then 90 z": ((90.0, 0.0, 90.0), (20.0, -30.0, 10.0)),
    "-90 x then 90 y": ((-90.0, 90.0, 0.0), (-40.0, 0.0, 25.0)),
    "90 y then -90 z": ((0.0, 90.0, -90.0), (0.0, 60.0, -20.0)),
    "oblique 135/-60/45": ((135.0, -60.0, 45.0), (35.0, 15.0, -50.0)),
    "250 mm offset, 150 about y": ((30.0, 150.0, 0.0), tuple(OFFSET_250_MM)),
}


@pytest.mark.parametrize("pose_name", POSES)
def test_far_pose_is_captured(pose_name, sample_ct, sample_mr, reference_ct_to_mr, ct_object_points):
    centre = np.asarray(sample_mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in sample_mr.GetSize()]))
    pose = rigid_pose(*POSES[pose_name], centre=centre)
    result = register_images(sample_ct, move_header(sample_mr, pose), OPTIONS)
    assert result.status == "ok"
    assert p95_distance(result.matrix, pose @ reference_ct_to_mr, ct_object_points) < 5.0
