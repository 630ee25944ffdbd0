"""Landmark registration on MRML markups (world coordinates, parent transforms, the output transform
under a list, thin-plate splines in a transform node), and landmarks as the start pose of the intensity
registration on the bundled pair from a far pose."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import move_header, p95_distance, rigid_pose

from CTMRRegistrationLib import InputError, RegistrationOptions
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, transform_points
from CTMRRegistrationLib.elastix.transforms import compose
from CTMRRegistrationLib.mrml.landmark_registration import (
    landmarks_from_file,
    register_images_from_landmarks,
    register_landmarks,
)
from CTMRRegistrationLib.mrml.node_io import save_node
from CTMRRegistrationLib.mrml.nodes import points_from_markups, set_markups_from_points, vtk_matrix_from_numpy

FIXED = np.array([[-60.0, -20, -15], [55, -25, 10], [5, 45, -20], [-10, 5, 30], [30, 30, 25], [-40, 35, 5]])
TRUTH = rigid_pose((15.0, -25.0, 40.0), (10.0, -20.0, 5.0))


def markups(context, name, points, parent=None):
    node = context.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    set_markups_from_points(node, points, [f"{name}-{i}" for i in range(len(points))])
    if parent is not None:
        node.SetAndObserveTransformNodeID(parent.GetID())
    return node


def linear_node(context, matrix_ras):
    node = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetMatrixTransformToParent(vtk_matrix_from_numpy(matrix_ras))
    return node


def harden(node):
    node.HardenTransform()
    return points_from_markups(node)


def test_markups_under_a_parent_transform_are_read_in_world_coordinates(context):
    parent = linear_node(context, rigid_pose((0.0, 90.0, 0.0), (100.0, 0.0, -30.0)))
    fixed = markups(context, "CT", FIXED)
    moving = markups(context, "MR", np.zeros_like(FIXED), parent)
    set_markups_from_points(moving, transform_points(TRUTH, FIXED))  # world positions, through the parent
    local = np.array([moving.GetNthControlPointPosition(i) for i in range(len(FIXED))])
    assert np.abs(local * [-1, -1, 1] - transform_points(TRUTH, FIXED)).max() > 10.0
    result = register_landmarks(context, fixed, moving)
    np.testing.assert_allclose(result.transform.matrix, TRUTH, atol=1e-9)
    assert result.errors.fre_rms < 1e-9
    moved = markups(context, "check", transform_points(TRUTH, FIXED), result.transform_node)
    np.testing.assert_allclose(harden(moved), FIXED, atol=1e-6)


def test_landmarks_from_a_file(context, tmp_path):
    node = markups(context, "CT", FIXED)
    save_node(context, node, tmp_path / "ct.mrk.json")
    points, labels = landmarks_from_file(context, tmp_path / "ct.mrk.json")
    np.testing.assert_allclose(points, FIXED, atol=1e-6)
    assert labels == [f"CT-{i}" for i in range(len(FIXED))]


def test_moving_list_under_the_output_transform_gives_the_same_result_again(context):
    fixed = markups(context, "CT", FIXED)
    moving = markups(context, "MR", transform_points(TRUTH, FIXED))
    first = register_landmarks(context, fixed, moving)
    moving.SetAndObserveTransformNodeID(first.transform_node.GetID())  # to watch the points land on CT
    np.testing.assert_allclose(points_from_markups(moving), FIXED, atol=1e-6)
    second = register_landmarks(context, fixed, moving, output_transform=first.transform_node)
    np.testing.assert_allclose(second.transform.matrix, TRUTH, atol=1e-9)
    assert any("under the output transform" in warning for warning in second.warnings)
    np.testing.assert_allclose(points_from_markups(moving, first.transform_node), transform_points(TRUTH, FIXED),
                               atol=1e-9)


def test_thin_plate_spline_node_maps_moving_landmarks_onto_fixed_ones(context):
    bent = transform_points(TRUTH, FIXED) + np.random.default_rng(3).normal(0.0, 2.0, FIXED.shape)
    fixed, moving = markups(context, "CT", FIXED), markups(context, "MR", bent)
    targets_fixed = markups(context, "CTt", FIXED[:2] + 1.0)
    targets_moving = markups(context, "MRt", transform_points(TRUTH, FIXED[:2] + 1.0))
    result = register_landmarks(context, fixed, moving, kind="tps", fixed_targets=targets_fixed,
                                moving_targets=targets_moving)
    assert result.errors.fre_rms < 1e-6
    expected_tre = np.linalg.norm(result.transform.transform_points(FIXED[:2] + 1.0)
                                  - transform_points(TRUTH, FIXED[:2] + 1.0), axis=1)
    np.testing.assert_allclose(result.targets.per_point, expected_tre, atol=1e-9)
    assert result.transform_node.IsA("vtkMRMLTransformNode") and not result.transform_node.IsLinear()
    moving.SetAndObserveTransformNodeID(result.transform_node.GetID())
    np.testing.assert_allclose(harden(moving), FIXED, atol=1e-3)  # "to parent" is VTK's iterative inverse
    with pytest.raises(InputError, match="linear transform node"):
        register_landmarks(context, fixed, moving, kind="tps", output_transform=linear_node(context, np.eye(4)))


def test_compose_is_exact_for_linear_and_ordered_for_composites():
    first, second = rigid_pose((10.0, 0.0, 0.0), (5.0, 0.0, 0.0)), rigid_pose((0.0, 0.0, 30.0), (0.0, 8.0, 0.0))
    point = np.array([[12.0, -7.0, 3.0]])
    linear = compose(first, compose(np.eye(4), sitk.AffineTransform(second[:3, :3].ravel().tolist(),
                                                                   second[:3, 3].tolist())))
    np.testing.assert_allclose(linear.TransformPoint(point[0].tolist()), transform_points(second @ first, point)[0])
    field = sitk.Image([5, 5, 5], sitk.sitkVectorFloat64)
    field.SetOrigin([-50.0] * 3)
    field.SetSpacing([25.0] * 3)
    field = sitk.DisplacementFieldTransform(field + 0.0)  # zero field: non-linear type, identity mapping
    composite = compose(first, field)
    assert isinstance(composite, sitk.CompositeTransform)
    np.testing.assert_allclose(composite.TransformPoint(point[0].tolist()), transform_points(first, point)[0])


@pytest.mark.slow
def test_landmark_start_pose_is_refined_and_composed_into_one_transform(sample_ct, sample_mr, reference_ct_to_mr,
                                                                        ct_object_points):
    """MR moved 180 degrees: the landmark pose (6 points, 3 mm localisation noise) starts elastix."""
    centre = np.asarray(sample_mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in sample_mr.GetSize()]))
    pose = rigid_pose((180.0, 0.0, 20.0), (15.0, -10.0, 5.0), centre=centre)
    expected = pose @ reference_ct_to_mr
    fixed_points = ct_object_points[::700][:6]
    moving_points = transform_points(expected, fixed_points) + np.random.default_rng(5).normal(0, 3.0, (6, 3))
    result = register_images_from_landmarks(sample_ct, move_header(sample_mr, pose), fixed_points, moving_points,
                                            RegistrationOptions(threads=2))
    assert result.status == "ok" and result.metrics["initialization"]["method"] == "landmarks"
    assert p95_distance(result.matrix, expected, ct_object_points) < 5.0
    assert p95_distance(matrix_from_sitk(result.initial_transform), expected, ct_object_points) < 10.0
