"""Every action of the Slicer panel, driven headless through its Qt-free layer (apps.panel) with the arguments
the widget passes, on a real slicer-core scene with the bundled pair; the scene is checked afterwards."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import p95_distance, rigid_pose

from CTMRRegistrationLib.apps.panel import Panel, PanelSettings
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.errors import Cancelled, InputError
from CTMRRegistrationLib.core.geometry import flip_ras_lps, matrix_from_sitk
from CTMRRegistrationLib.mrml.crop_roi import roi_corners
from CTMRRegistrationLib.mrml.logic import RegistrationLogic
from CTMRRegistrationLib.mrml.nodes import (
    add_volume_from_sitk,
    ijk_to_world_lps,
    sitk_from_volume,
    vtk_matrix_from_numpy,
)
from CTMRRegistrationLib.mrml.scene import create_headless_context
from CTMRRegistrationLib.mrml.transform_nodes import sitk_from_transform_node
from CTMRRegistrationLib.qa.overlay import normalise
from CTMRRegistrationLib.qa.report import REPORT_NAME

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session(sample_ct, sample_mr, tmp_path_factory):
    """A scene with the pair, the panel, its settings, and the first registration (with a report)."""
    context = create_headless_context()
    ct = add_volume_from_sitk(context, sample_ct, "PorcineCT")
    mr = add_volume_from_sitk(context, sample_mr, "PorcineMR")
    panel = Panel(RegistrationLogic(context))
    settings = PanelSettings(fixedVolume=ct, movingVolume=mr, reportFolder=tmp_path_factory.mktemp("report"))
    first = panel.register(settings)
    return context, panel, settings, first


def test_register_stores_the_result_in_the_scene_and_the_settings(session, reference_ct_to_mr, ct_object_points):
    context, panel, settings, first = session
    assert first.verdict == "ok" and settings.verdict == "ok"
    assert settings.outputTransform is first.transform_node
    assert settings.movingVolume.GetParentTransformNode() is first.transform_node
    assert settings.metricsTable.GetNumberOfRows() > 10 and settings.metricsTable.GetCellText(0, 1) == "ok"
    error = p95_distance(first.matrix, reference_ct_to_mr, ct_object_points)
    assert error < 5.0 and error < first.error_bound_mm < 10.0
    assert settings.metricsTable.GetCellText(1, 1) == f"<= {first.error_bound_mm}"
    assert panel.report_target(settings) == settings.reportFolder / REPORT_NAME
    assert ">ok<" in panel.report_target(settings).read_text()
    assert f"error bound: p95 &lt;= {first.error_bound_mm} mm" in panel.report_target(settings).read_text()


def test_checkerboard_of_the_registered_pair(session, sample_ct):
    context, panel, settings, first = session
    assert panel.can_show_checkerboard(settings)
    node = panel.show_checkerboard()
    assert panel.show_checkerboard() is node  # updated, not duplicated
    board = sitk.GetArrayFromImage(sitk_from_volume(node))
    assert board.shape == sitk.GetArrayViewFromImage(sample_ct).shape
    fixed = normalise(sitk.GetArrayFromImage(sample_ct))
    mr_on_ct = sitk.Resample(sitk_from_volume(settings.movingVolume, world=False), sample_ct, first.transform,
                             sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    in_fixed_squares = np.isclose(board, fixed, atol=1e-4)
    assert 0.35 < in_fixed_squares.mean() < 0.75  # about half the cubes show the CT ...
    assert not np.allclose(board, fixed) and sitk.GetArrayViewFromImage(mr_on_ct).max() > 0  # ... the rest the MR
    assert node.GetDisplayNode().GetWindowLevelMin() == 0.0 and node.GetDisplayNode().GetWindowLevelMax() == 1.0


def test_the_registered_region_and_cropped_volumes(session, sample_ct):
    context, panel, settings, first = session
    region = settings.registeredRegion
    assert region is first.registered_region_node and region.IsA("vtkMRMLMarkupsROINode")
    np.testing.assert_allclose(roi_corners(region), first.crop_region, atol=1e-6)
    fixed_cropped, moving_cropped = panel.crop_volumes(settings)
    assert fixed_cropped.GetImageData().GetDimensions() == tuple(first.metrics["cropped_sizes"]["fixed"])
    start = np.round(np.linalg.inv(ijk_to_world_lps(settings.fixedVolume)) @ ijk_to_world_lps(fixed_cropped), 6)
    np.testing.assert_allclose(start[:3, :3], np.eye(3), atol=1e-6)  # same voxels, shifted by whole indices
    np.testing.assert_allclose(start[:3, 3], np.round(start[:3, 3]), atol=1e-6)
    i, j, k = start[:3, 3].astype(int)
    cropped = sitk.GetArrayFromImage(sitk_from_volume(fixed_cropped))
    np.testing.assert_array_equal(cropped, sitk.GetArrayViewFromImage(sample_ct)[k:k + cropped.shape[0],
                                                                                 j:j + cropped.shape[1],
                                                                                 i:i + cropped.shape[2]])
    assert moving_cropped.GetImageData().GetNumberOfPoints() > 0


def test_register_again_writes_into_the_same_node(session, ct_object_points):
    context, panel, settings, first = session
    matrix = first.matrix.copy()
    nodes = context.scene.GetNumberOfNodes()
    again = panel.register(settings)
    assert again.transform_node is settings.outputTransform is first.transform_node
    assert settings.movingVolume.GetParentTransformNode() is again.transform_node
    assert again.transform_node.GetParentTransformNode() is None
    assert context.scene.GetNumberOfNodes() == nodes
    assert p95_distance(again.matrix, matrix, ct_object_points) < 1.0
    stored = matrix_from_sitk(sitk_from_transform_node(context, again.transform_node))
    assert p95_distance(stored, again.matrix, ct_object_points) < 1e-3


def test_error_and_cancel_leave_scene_and_settings_unchanged(session):
    context, panel, settings, first = session
    nodes, verdict, transform = context.scene.GetNumberOfNodes(), settings.verdict, settings.outputTransform
    moving_parent = settings.movingVolume.GetParentTransformNode()
    settings.preset = resources.sample_data_dir() / "README.md"
    with pytest.raises(InputError):
        panel.register(settings)
    settings.preset = PanelSettings.preset
    with pytest.raises(Cancelled):
        panel.register(settings, progress=lambda fraction, message: None, cancelled=lambda: True)
    calls = []
    with pytest.raises(Cancelled):  # cancelled during the quality assessment, after the registration proper
        panel.register(settings, progress=lambda fraction, message: calls.append(message),
                       cancelled=lambda: any("quality" in message for message in calls))
    assert any("quality" in message for message in calls)
    assert context.scene.GetNumberOfNodes() == nodes
    assert (settings.verdict, settings.outputTransform) == (verdict, transform)
    assert settings.movingVolume.GetParentTransformNode() is moving_parent


def test_harden_moves_the_moving_voxels_where_the_transform_showed_them(sample_ct, sample_mr):
    context = create_headless_context()
    ct = add_volume_from_sitk(context, sample_ct, "CT")
    mr = add_volume_from_sitk(context, sample_mr, "MR")
    settings = PanelSettings(fixedVolume=ct, movingVolume=mr, harden=True)
    result = Panel(RegistrationLogic(context)).register(settings)
    assert mr.GetParentTransformNode() is None and result.transform_node is settings.outputTransform
    expected = np.linalg.inv(result.matrix) @ ijk_to_world_lps(add_volume_from_sitk(context, sample_mr, "unmoved"))
    np.testing.assert_allclose(ijk_to_world_lps(mr), expected, atol=1e-6)


def test_a_result_sits_on_top_of_the_moving_volumes_own_transforms(sample_ct, sample_mr, session, ct_object_points):
    """The chain policy the self-test asserts: MR -> its known pose -> the (world-space) result."""
    unmoved = session[3]
    context = create_headless_context()
    ct = add_volume_from_sitk(context, sample_ct, "CT")
    mr = add_volume_from_sitk(context, sample_mr, "MR")
    pose_node = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "known pose")
    pose_lps = rigid_pose((6.0, 0.0, -5.0), (-12.0, 8.0, 10.0))
    pose_node.SetMatrixTransformToParent(vtk_matrix_from_numpy(flip_ras_lps(pose_lps)))
    mr.SetAndObserveTransformNodeID(pose_node.GetID())
    moved = RegistrationLogic(context).register(ct, mr)
    assert mr.GetParentTransformNode() is pose_node
    assert pose_node.GetParentTransformNode() is moved.transform_node
    # the MR's world points are pose(p): the result must be pose composed with the unmoved result
    assert p95_distance(moved.matrix, pose_lps @ unmoved.matrix, ct_object_points) < 1.0
    assert moved.verdict == "ok"
