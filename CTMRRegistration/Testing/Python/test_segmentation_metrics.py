"""Dice, Hausdorff, HD95 and mean surface distance on label maps with known overlap; segmentation nodes
and labelmap nodes as inputs; Jacobian determinant statistics of known transforms."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree

from CTMRRegistrationLib.core.geometry import sitk_from_matrix
from CTMRRegistrationLib.mrml.nodes import add_volume_from_sitk
from CTMRRegistrationLib.mrml.qa_inputs import labelmap_from_node
from CTMRRegistrationLib.qa.jacobian import jacobian_statistics
from CTMRRegistrationLib.qa.segmentation_metrics import overlap_metrics, relabel_by_name, segmentation_metrics

SPACING = (0.5, 1.0, 2.0)


def box_image(low, high, value=1, size=(80, 40, 24)) -> sitk.Image:
    """A labelmap (x, y, z index order) with `value` in the voxel box [low, high] inclusive."""
    array = np.zeros(size[::-1], dtype=np.uint8)
    array[low[2]:high[2] + 1, low[1]:high[1] + 1, low[0]:high[0] + 1] = value
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin((-20.0, 5.0, 10.0))
    return image


def contour_points(image: sitk.Image) -> np.ndarray:
    contour = sitk.GetArrayFromImage(sitk.LabelContour(image, fullyConnected=False)) > 0
    index = np.argwhere(contour)[:, ::-1]
    return index * np.asarray(image.GetSpacing()) + np.asarray(image.GetOrigin())


def test_two_shifted_boxes():
    """20 x 10 x 5-voxel boxes (10 mm cubes), the second 6 voxels = 3 mm further along x."""
    fixed, moving = box_image((20, 10, 5), (39, 19, 9)), box_image((26, 10, 5), (45, 19, 9))
    metrics = overlap_metrics(fixed, moving)
    assert metrics["dice"] == pytest.approx(2 * 14 / 40)  # 14 of 20 columns shared
    assert metrics["hausdorff_mm"] == pytest.approx(3.0)  # the end faces are 3 mm apart
    a, b = contour_points(fixed), contour_points(moving)
    forward, backward = cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]  # brute force, independent of SimpleITK
    assert metrics["mean_surface_mm"] == pytest.approx(np.concatenate([forward, backward]).mean(), abs=1e-3)
    assert metrics["hd95_mm"] == pytest.approx(max(np.percentile(forward, 95), np.percentile(backward, 95)), abs=1e-3)


def test_identical_and_disjoint_labels():
    box = box_image((20, 10, 5), (39, 19, 9))
    assert overlap_metrics(box, box) == {"dice": 1.0, "hausdorff_mm": 0.0, "hd95_mm": 0.0, "mean_surface_mm": 0.0}
    far = box_image((60, 25, 14), (70, 30, 18))
    assert overlap_metrics(box, far)["dice"] == 0.0
    assert overlap_metrics(box, box_image((0, 0, 0), (0, 0, 0), value=0))["hausdorff_mm"] is None


def test_metrics_after_a_transform_that_undoes_a_shift():
    fixed = box_image((20, 10, 5), (39, 19, 9), value=3)
    moving = box_image((26, 10, 5), (45, 19, 9), value=3)
    shift = np.eye(4)
    shift[0, 3] = 3.0  # fixed -> moving: the moving box sits 3 mm further along x
    before = segmentation_metrics(fixed, moving)["3"]
    after = segmentation_metrics(fixed, moving, sitk_from_matrix(shift))["3"]
    assert before["dice"] == pytest.approx(0.7) and after["dice"] == 1.0 and after["hausdorff_mm"] == 0.0


def test_segmentation_and_labelmap_nodes(context):
    labels = box_image((20, 10, 5), (39, 19, 9), value=1) + box_image((50, 25, 12), (60, 30, 16), value=2)
    labelmap_node = add_volume_from_sitk(context, labels, "labels", labelmap=True)
    image, names = labelmap_from_node(context, labelmap_node)
    assert names == {1: "1", 2: "2"}
    segmentation = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    assert context.segmentations.ImportLabelmapToSegmentationNode(labelmap_node, segmentation)
    segmentation.GetSegmentation().GetNthSegment(0).SetName("liver")
    segmentation.GetSegmentation().GetNthSegment(1).SetName("kidney")
    exported, segment_names = labelmap_from_node(context, segmentation)
    assert segment_names == {1: "liver", 2: "kidney"}
    on_grid = sitk.Resample(exported, labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(on_grid), sitk.GetArrayViewFromImage(labels))
    swapped = relabel_by_name(labels, {1: "kidney", 2: "liver"}, segment_names)
    metrics = segmentation_metrics(exported, swapped, names=segment_names)
    assert set(metrics) == {"liver", "kidney"} and metrics["liver"]["dice"] == 0.0


def test_jacobian_of_a_scaling_and_of_a_fold():
    reference = box_image((0, 0, 0), (79, 39, 23))
    scaling = np.diag([1.1, 1.1, 1.1, 1.0])
    stats = jacobian_statistics(sitk_from_matrix(scaling), reference)
    assert stats["jacobian_min"] == pytest.approx(1.331, abs=1e-3) and stats["folding_percent"] == 0.0
    x = (np.arange(80) * SPACING[0])[None, None, :] * np.ones((24, 40, 1))
    displacement = np.zeros((24, 40, 80, 3))
    inside = np.zeros((24, 40, 80), dtype=bool)
    inside[:, :, 20:60] = True
    displacement[..., 0] = np.where(inside, -2.0 * (x - 20.0), 0.0)  # du/dx = -2: det = -1 inside the slab
    field = sitk.GetImageFromArray(displacement, isVector=True)
    field.CopyInformation(reference)
    slab = box_image((25, 0, 0), (54, 39, 23))  # well inside the folded slab
    stats = jacobian_statistics(sitk.DisplacementFieldTransform(field), reference, slab)
    assert stats["jacobian_min"] == pytest.approx(-1.0, abs=1e-6) and stats["folding_percent"] == 100.0
