"""Exact geometry between MRML (RAS, to parent) and SimpleITK (LPS, resampling), checked against MRML's
own transform machinery, with oblique directions and non-identity parent transforms."""

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from scipy.spatial.transform import Rotation

from CTMRRegistrationLib.core.geometry import matrix_from_sitk, sitk_from_matrix, transform_points
from CTMRRegistrationLib.core.imaging import resample_isotropic
from CTMRRegistrationLib.core.resources import parameter_file
from CTMRRegistrationLib.elastix.parameters import format_parameter_map, read_parameter_file
from CTMRRegistrationLib.elastix.transforms import linear_transform_map, sitk_from_transform_map
from CTMRRegistrationLib.mrml.nodes import (
    add_volume_from_sitk,
    points_from_markups,
    set_linear_transform_node_from_sitk,
    set_markups_from_points,
    sitk_from_linear_transform_node,
    sitk_from_volume,
    vtk_matrix_from_numpy,
)

TOLERANCE_MM = 1e-6
FLIP = np.array([-1.0, -1.0, 1.0])


def oblique_image() -> sitk.Image:
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.normal(size=(7, 6, 5)).astype(np.float32))
    image.SetSpacing((0.7, 1.3, 2.9))
    image.SetOrigin((12.5, -40.25, 3.0))
    image.SetDirection(Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix().ravel().tolist())
    return image


def linear_node(context, matrix, parent=None):
    node = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetMatrixTransformToParent(vtk_matrix_from_numpy(matrix))
    if parent is not None:
        node.SetAndObserveTransformNodeID(parent.GetID())
    return node


def ras_to_world(node, ras):
    """Where MRML itself puts a local RAS point of a transformed node in world coordinates."""
    transform = vtk.vtkGeneralTransform()
    parent = node.GetParentTransformNode()
    if parent is not None:
        parent.GetTransformToWorld(transform)
    return np.array(transform.TransformPoint(list(ras)))


def assert_same_image(a: sitk.Image, b: sitk.Image):
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=TOLERANCE_MM)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=TOLERANCE_MM)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


def test_volume_round_trip_oblique(context):
    image = oblique_image()
    node = add_volume_from_sitk(context, image, "oblique")
    assert_same_image(sitk_from_volume(node), image)
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    index = (4, 1, 3)
    ras = ijk_to_ras.MultiplyPoint(index + (1,))[:3]
    np.testing.assert_allclose(np.array(ras) * FLIP, image.TransformIndexToPhysicalPoint(index), atol=TOLERANCE_MM)


def test_volume_under_parent_transform_is_in_world_coordinates(context):
    image = oblique_image()
    parent = linear_node(context, np.array([[0, -1, 0, 30], [1, 0, 0, -5], [0, 0, 1, 12], [0, 0, 0, 1.0]]))
    node = add_volume_from_sitk(context, image, "moved")
    node.SetAndObserveTransformNodeID(parent.GetID())
    world = sitk_from_volume(node)
    index = (2, 5, 1)
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    expected = ras_to_world(node, ijk_to_ras.MultiplyPoint(index + (1,))[:3]) * FLIP
    np.testing.assert_allclose(world.TransformIndexToPhysicalPoint(index), expected, atol=TOLERANCE_MM)
    assert_same_image(sitk_from_volume(node, world=False), image)

    from CTMRRegistrationLib.mrml.nodes import update_volume_from_sitk

    update_volume_from_sitk(node, image)
    assert_same_image(sitk_from_volume(node), image)


@pytest.mark.parametrize("with_parent", [False, True])
def test_transform_node_round_trip_and_direction(context, with_parent):
    rng = np.random.default_rng(2)
    resampling = np.eye(4)
    resampling[:3, :3] = Rotation.from_rotvec(rng.normal(size=3)).as_matrix() @ np.diag([1.1, 0.9, 1.05])
    resampling[:3, 3] = rng.normal(scale=40, size=3)
    parent_matrix = np.array([[1, 0, 0, 5], [0, 0, -1, 2], [0, 1, 0, -7], [0, 0, 0, 1.0]])
    parent = linear_node(context, parent_matrix) if with_parent else None
    node = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    if parent is not None:
        node.SetAndObserveTransformNodeID(parent.GetID())
    set_linear_transform_node_from_sitk(node, sitk_from_matrix(resampling, center=(3.0, -2.0, 8.0)))

    fixed_lps = rng.normal(scale=50, size=(10, 3))
    moving_lps = transform_points(resampling, fixed_lps)
    to_world = vtk.vtkGeneralTransform()
    node.GetTransformToWorld(to_world)
    for fixed_point, moving_point in zip(fixed_lps, moving_lps):
        np.testing.assert_allclose(np.array(to_world.TransformPoint(list(moving_point * FLIP))) * FLIP,
                                   fixed_point, atol=TOLERANCE_MM)
    np.testing.assert_allclose(matrix_from_sitk(sitk_from_linear_transform_node(node)), resampling, atol=1e-9)


def test_markups_round_trip_under_parent_transform(context):
    parent = linear_node(context, np.array([[0, 0, 1, 10], [0, 1, 0, 0], [-1, 0, 0, 4], [0, 0, 0, 1.0]]))
    markups = context.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    markups.SetAndObserveTransformNodeID(parent.GetID())
    points = np.array([[1.0, 2.0, 3.0], [-10.5, 20.25, 7.0], [0.0, -3.0, 100.0]])
    set_markups_from_points(markups, points, labels=["a", "b", "c"])
    np.testing.assert_allclose(points_from_markups(markups), points, atol=TOLERANCE_MM)
    local = [0.0, 0.0, 0.0]
    markups.GetNthControlPointPosition(1, local)
    np.testing.assert_allclose(ras_to_world(markups, local) * FLIP, points[1], atol=TOLERANCE_MM)
    assert markups.GetNthControlPointLabel(2) == "c"


def test_elastix_linear_transform_map_round_trip():
    reference = oblique_image()
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("zyx", [170, 10, -5], degrees=True).as_matrix()
    matrix[:3, 3] = [12.0, -200.0, 33.0]
    converted = matrix_from_sitk(sitk_from_transform_map(linear_transform_map(matrix, reference)))
    np.testing.assert_allclose(converted, matrix, atol=1e-9)


def test_elastix_euler_map_matches_itk_euler_transform():
    parameters = {
        "Transform": ["EulerTransform"], "TransformParameters": ["0.1", "-0.2", "3.0", "5", "-6", "7"],
        "CenterOfRotationPoint": ["10", "20", "30"],
    }
    expected = sitk.Euler3DTransform((10, 20, 30), 0.1, -0.2, 3.0, (5, -6, 7))
    point = (1.0, -2.0, 50.0)
    np.testing.assert_allclose(sitk_from_transform_map(parameters).TransformPoint(point),
                               expected.TransformPoint(point), atol=1e-9)


def test_parameter_file_round_trip(tmp_path):
    parameters = read_parameter_file(parameter_file("Rigid"))
    assert parameters["Transform"] == ["EulerTransform"]
    assert parameters["Metric"] == ["AdvancedMattesMutualInformation"]
    copy = tmp_path / "copy.txt"
    copy.write_text(format_parameter_map(parameters))
    assert read_parameter_file(copy) == parameters


def test_isotropic_resampling_smooths_each_finer_axis_to_the_grid():
    """One smoothing filter over the native pixel type equals Gaussian passes, axis by axis, over floats; an axis
    already coarser than the grid (thick slices) is left as it is."""
    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1000, (20, 60, 50)).astype(np.int16))
    image.SetSpacing([0.5, 0.7, 2.5])
    image.SetOrigin([3.0, -4.0, 7.0])
    expected = sitk.Cast(image, sitk.sitkFloat32)
    expected = sitk.BinShrink(expected, [2, 1, 1])
    for axis, spacing in enumerate(expected.GetSpacing()):
        if spacing < 2.0:
            expected = sitk.RecursiveGaussian(expected, ((4.0 - spacing**2) / 4) ** 0.5, direction=axis)
    result = resample_isotropic(image, 2.0)
    assert result.GetSize() == (12, 21, 25) and result.GetSpacing() == (2.0, 2.0, 2.0)
    reference = sitk.Resample(expected, result, sitk.Transform(), sitk.sitkLinear,
                              float(sitk.GetArrayViewFromImage(expected).min()), sitk.sitkFloat32)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(result), sitk.GetArrayViewFromImage(reference), atol=0.5)
