"""Registration on MRML nodes: the transform node, inspectable mask nodes, and user data left alone."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import move_header, p95_distance, rigid_pose
from vtk.util.numpy_support import vtk_to_numpy

from CTMRRegistrationLib import Cancelled, RegistrationLogic
from CTMRRegistrationLib.core.imaging import guess_modality
from CTMRRegistrationLib.mrml.nodes import add_volume_from_sitk, sitk_from_volume


def voxels(node) -> np.ndarray:
    return vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).copy()


@pytest.mark.slow
def test_register_nodes_adds_masks_and_leaves_the_mr_untouched(context, sample_ct, sample_mr, reference_ct_to_mr,
                                                                 ct_object_points):
    ct_node = add_volume_from_sitk(context, sample_ct, "CT")
    mr_node = add_volume_from_sitk(context, sample_mr, "MR")
    mr_before = voxels(mr_node)
    resampled = context.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MR resampled")
    result = RegistrationLogic(context).register(ct_node, mr_node, add_mask_nodes=True, threads=2,
                                                 output_volume=resampled)

    assert result.status == "ok"
    assert result.stage_seconds.get("bias_correction_moving", 0) > 0
    np.testing.assert_array_equal(voxels(mr_node), mr_before)
    assert mr_node.GetParentTransformNode() is result.transform_node
    assert result.transform_node.IsA("vtkMRMLLinearTransformNode")
    assert result.transform_node.GetNodeReference("spatialRegistrationFixed") is ct_node
    assert result.transform_node.GetNodeReference("spatialRegistrationMoving") is mr_node
    assert resampled.GetImageData().GetDimensions() == ct_node.GetImageData().GetDimensions()
    assert resampled.GetImageData().GetScalarType() == mr_node.GetImageData().GetScalarType()  # as the MR stores it
    np.testing.assert_allclose(sitk_from_volume(resampled).GetOrigin(), sample_ct.GetOrigin(), atol=1e-6)
    assert p95_distance(result.matrix, reference_ct_to_mr, ct_object_points) < 5.0

    for role, node in result.mask_nodes.items():
        assert node.IsA("vtkMRMLLabelMapVolumeNode")
        assert set(np.unique(voxels(node))) == {0, 1}, role
    ct_mask = sitk_from_volume(result.mask_nodes["fixed"])
    inside = ct_mask.TransformPhysicalPointToIndex(tuple(ct_object_points.mean(axis=0)))
    assert ct_mask[inside] == 1


def test_foreground_mask_node(context, sample_ct):
    node = RegistrationLogic(context).foreground_mask_node(add_volume_from_sitk(context, sample_ct, "CT"))
    assert node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetName() == "CT foreground"
    assert 0.2 < voxels(node).mean() < 0.6


def test_dicom_modality_tag_wins_over_intensities(sample_mr):
    tagged = sitk.Image(sample_mr)
    assert guess_modality(tagged) == "MR"
    tagged.SetMetaData("0008|0060", "CT ")
    assert guess_modality(tagged) == "CT"


@pytest.mark.slow
def test_harden_changes_the_header_only(context, sample_ct, sample_mr):
    ct_node = add_volume_from_sitk(context, sample_ct, "CT")
    mr_node = add_volume_from_sitk(context, moved := move_header(sample_mr, rigid_pose((0, 0, 4), (6, -3, 2))), "MR")
    before = voxels(mr_node)
    result = RegistrationLogic(context).register(ct_node, mr_node, harden=True, initialization="none", threads=2,
                                                 bias_correction="off")
    assert mr_node.GetParentTransformNode() is None
    np.testing.assert_array_equal(voxels(mr_node), before)
    hardened = sitk_from_volume(mr_node)
    corner = np.asarray(moved.GetOrigin())
    expected = np.linalg.inv(result.matrix) @ np.append(corner, 1.0)
    np.testing.assert_allclose(hardened.GetOrigin(), expected[:3], atol=1e-4)


@pytest.mark.slow
def test_cancel_leaves_the_scene_unchanged(context, sample_ct, sample_mr):
    ct_node = add_volume_from_sitk(context, sample_ct, "CT")
    mr_node = add_volume_from_sitk(context, sample_mr, "MR")
    nodes = context.scene.GetNumberOfNodes()
    calls = []
    with pytest.raises(Cancelled):
        RegistrationLogic(context).register(ct_node, mr_node, add_mask_nodes=True, threads=2,
                                            cancelled=lambda: calls.append(1) or len(calls) > 2)
    assert context.scene.GetNumberOfNodes() == nodes
    assert mr_node.GetParentTransformNode() is None
