"""End-to-end rigid registration of the real porcine CT/T2-MR pair (bundled 2 mm versions).

The pair starts rotated about 180 degrees. Poses are exact: the MR header is moved by a known rigid
pose, and the result for the moved MR must equal the result for the unmoved MR composed with the pose.
The unmoved result must land on the reference rigid optimum (within 5 mm p95: the reference is a
Mattes-MI optimum of a deformed phantom, not ground truth)."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import move_header, p95_distance, rigid_pose

from CTMRRegistrationLib import Cancelled, RegistrationOptions, register_images

pytestmark = pytest.mark.slow  # real registrations of the bundled pair

OPTIONS = RegistrationOptions(threads=2)
POSES = {
    "shift 20 mm": ((0.0, 0.0, 0.0), (12.0, -10.0, 12.0)),
    "tilt 10 deg": ((6.0, -5.0, 6.0), (-8.0, 5.0, 4.0)),
}


@pytest.fixture(scope="module")
def ct_fixed_result(sample_ct, sample_mr):
    return register_images(sample_ct, sample_mr, OPTIONS)


@pytest.fixture(scope="module")
def mr_fixed_result(sample_ct, sample_mr):
    return register_images(sample_mr, sample_ct, OPTIONS)


def test_ct_fixed_reaches_reference(ct_fixed_result, reference_ct_to_mr, ct_object_points):
    assert ct_fixed_result.status == "ok"
    assert p95_distance(ct_fixed_result.matrix, reference_ct_to_mr, ct_object_points) < 5.0


def test_mr_fixed_reaches_inverse_reference(mr_fixed_result, reference_ct_to_mr, ct_object_points):
    mr_points = ct_object_points @ reference_ct_to_mr[:3, :3].T + reference_ct_to_mr[:3, 3]
    assert mr_fixed_result.status == "ok"
    assert p95_distance(mr_fixed_result.matrix, np.linalg.inv(reference_ct_to_mr), mr_points) < 5.0


def test_directions_are_inverse(ct_fixed_result, mr_fixed_result, ct_object_points):
    round_trip = mr_fixed_result.matrix @ ct_fixed_result.matrix
    assert p95_distance(round_trip, np.eye(4), ct_object_points) < 2.0


def test_either_direction_and_a_second_run_give_the_same_numbers(sample_ct, sample_mr, ct_fixed_result,
                                                                mr_fixed_result):
    """Elastix turns start poses that differ in their last bits into results tenths of a mm apart; the start is
    snapped to a grid far below any effect, so a pair registers to one result whichever image is fixed."""
    np.testing.assert_allclose(mr_fixed_result.matrix @ ct_fixed_result.matrix, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(register_images(sample_ct, sample_mr, OPTIONS).matrix, ct_fixed_result.matrix,
                               atol=1e-9)


@pytest.mark.parametrize("pose_name", POSES)
def test_known_pose_recovered_ct_fixed(pose_name, sample_ct, sample_mr, ct_fixed_result, ct_object_points):
    centre = np.asarray(sample_mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in sample_mr.GetSize()]))
    pose = rigid_pose(*POSES[pose_name], centre=centre)
    result = register_images(sample_ct, move_header(sample_mr, pose), OPTIONS)
    expected = pose @ ct_fixed_result.matrix
    assert p95_distance(result.matrix, expected, ct_object_points) < 1.0


@pytest.mark.parametrize("pose_name", POSES)
def test_known_pose_recovered_mr_fixed(pose_name, sample_ct, sample_mr, mr_fixed_result, reference_ct_to_mr,
                                       ct_object_points):
    centre = np.asarray(sample_mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in sample_mr.GetSize()]))
    pose = rigid_pose(*POSES[pose_name], centre=centre)
    result = register_images(move_header(sample_mr, pose), sample_ct, OPTIONS)
    expected = mr_fixed_result.matrix @ np.linalg.inv(pose)
    moved_mr_points = ct_object_points @ (pose @ reference_ct_to_mr)[:3, :3].T + (pose @ reference_ct_to_mr)[:3, 3]
    assert p95_distance(result.matrix, expected, moved_mr_points) < 1.0


def test_mirrored_moving_image_is_flagged_not_registered(sample_ct, sample_mr):
    mirrored = sitk.Flip(sample_mr, [True, False, False])
    mirrored.CopyInformation(sample_mr)
    result = register_images(sample_ct, mirrored, OPTIONS)
    assert result.status == "mirrored"
    assert any("appears mirrored" in warning for warning in result.warnings)
    assert "rigid" not in result.stage_seconds


def test_cancel_stops_before_the_next_stage(sample_ct, sample_mr):
    stages = []
    with pytest.raises(Cancelled):
        register_images(sample_ct, sample_mr, RegistrationOptions(threads=2), cancelled=lambda: len(stages) >= 2,
                        progress=lambda fraction, message: stages.append(message))
    assert not any("elastix" in message for message in stages)
