"""Registration on MRML nodes: the transform node, inspectable mask nodes, and user data left alone."""

import numpy as np
import SimpleITK as sitk
from conftest import p95_distance
from CTMRRegistrationLib import RegistrationLogic
from CTMRRegistrationLib.geometry import add_volume_from_sitk, sitk_from_volume
from CTMRRegistrationLib.imaging import guess_modality
from vtk.util.numpy_support import vtk_to_numpy


def voxels(node) -> np.ndarray:
    return vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).copy()


def test_register_nodes_adds_masks_and_leaves_the_mr_untouched(context, sample_ct, sample_mr, reference_ct_to_mr,
                                                                 ct_object_points):
    ct_node = add_volume_from_sitk(context, sample_ct, "CT")
    mr_node = add_volume_from_sitk(context, sample_mr, "MR")
    mr_before = voxels(mr_node)
    result = RegistrationLogic(context).register(ct_node, mr_node, add_mask_nodes=True, threads=2)

    assert result.status == "ok"
    assert result.stage_seconds.get("bias_correction_moving", 0) > 0
    np.testing.assert_array_equal(voxels(mr_node), mr_before)
    assert mr_node.GetParentTransformNode() is result.transform_node
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
