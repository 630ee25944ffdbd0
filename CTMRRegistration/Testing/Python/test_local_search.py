"""The local pattern search that candidate poses climb before refinement."""

from __future__ import annotations

import numpy as np
from conftest import rigid_pose

from CTMRRegistrationLib.core.geometry import transform_points
from CTMRRegistrationLib.core.rotations import angle_between
from CTMRRegistrationLib.registration.local_search import SMALLEST_ROTATION_STEP_DEGREES, climb

CENTRE = np.array([10.0, -40.0, 120.0])
POINTS = CENTRE + np.random.default_rng(0).normal(scale=[30.0, 30.0, 120.0], size=(200, 3))  # an elongated object
TARGET = rigid_pose((20.0, -35.0, 160.0), (40.0, -25.0, 90.0), centre=CENTRE)


def closeness(poses: np.ndarray) -> np.ndarray:
    """Minus the mean distance between where each pose and the target map the object's points."""
    return np.array([-np.linalg.norm(transform_points(p, POINTS) - transform_points(TARGET, POINTS), axis=1).mean()
                     for p in poses])


def test_poses_15_degrees_and_40_mm_off_climb_to_the_target():
    offsets = [((15.0, 0.0, 0.0), (0.0, 0.0, 40.0)), ((-10.0, 8.0, 6.0), (25.0, -20.0, 0.0))]
    starts = np.array([TARGET @ rigid_pose(turn, shift, centre=CENTRE) for turn, shift in offsets])
    climbed, scores = climb(starts, closeness, CENTRE)
    assert np.all(scores > closeness(starts))
    assert np.allclose(scores, closeness(climbed))
    for pose in climbed:
        assert angle_between(pose, TARGET) < SMALLEST_ROTATION_STEP_DEGREES
        assert -closeness(pose[None])[0] < 5.0


def test_a_pose_without_a_score_stays_where_it_is():
    start = TARGET @ rigid_pose((15.0, 0.0, 0.0), (0.0, 0.0, 0.0), centre=CENTRE)
    climbed, scores = climb(start[None], lambda poses: np.full(len(poses), -np.inf), CENTRE)
    assert np.array_equal(climbed[0], start) and scores[0] == -np.inf
