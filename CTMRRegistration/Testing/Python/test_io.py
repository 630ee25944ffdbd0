"""Loading and saving through MRML storage nodes keeps voxels, geometry, points and transforms."""

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_geometry import assert_same_image, oblique_image
from vtkmodules.util import numpy_support

from CTMRRegistrationLib.core.errors import InputError
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, sitk_from_matrix
from CTMRRegistrationLib.mrml import node_io as mrml_io
from CTMRRegistrationLib.mrml.dicom_nodes import load_input_volume
from CTMRRegistrationLib.mrml.nodes import (
    add_volume_from_sitk,
    points_from_markups,
    set_linear_transform_node_from_sitk,
    set_markups_from_points,
    sitk_from_linear_transform_node,
    sitk_from_volume,
)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_volume_save_load(context, tmp_path, suffix):
    image = oblique_image()
    path = mrml_io.save_node(context, add_volume_from_sitk(context, image, "v"), tmp_path / f"v{suffix}")
    assert_same_image(sitk_from_volume(mrml_io.load_volume(context, path)), image)
    assert_same_image(sitk.ReadImage(str(path)), image)


def test_labelmap_save_load(context, tmp_path):
    labels = sitk.Cast(oblique_image() > 0, sitk.sitkUInt8)
    path = mrml_io.save_node(context, add_volume_from_sitk(context, labels, "l", labelmap=True), tmp_path / "l.nrrd")
    node = mrml_io.load_volume(context, path, labelmap=True)
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    assert_same_image(sitk_from_volume(node), labels)


@pytest.mark.parametrize("suffix", [".mrk.json", ".fcsv"])
def test_markups_save_load(context, tmp_path, suffix):
    points = np.array([[1.5, -2.0, 30.0], [40.0, 5.25, -7.0], [-3.0, 8.0, 9.0]])
    node = context.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    set_markups_from_points(node, points, labels=["p1", "p2", "p3"])
    path = mrml_io.save_node(context, node, tmp_path / f"points{suffix}")
    loaded = mrml_io.load_markups(context, path)
    np.testing.assert_allclose(points_from_markups(loaded), points, atol=1e-6)
    assert loaded.GetNthControlPointLabel(1) == "p2"


@pytest.mark.parametrize("suffix", [".h5", ".tfm", ".txt"])
def test_transform_file_is_the_itk_resampling_transform(context, tmp_path, suffix):
    resampling = np.array([[0.0, -1, 0, 10], [1, 0, 0, -20], [0, 0, 1, 5.5], [0, 0, 0, 1]])
    node = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    set_linear_transform_node_from_sitk(node, sitk_from_matrix(resampling))
    path = mrml_io.save_node(context, node, tmp_path / f"t{suffix}")
    np.testing.assert_allclose(matrix_from_sitk(sitk.ReadTransform(str(path))), resampling, atol=1e-9)
    loaded = mrml_io.load_transform(context, path)
    np.testing.assert_allclose(matrix_from_sitk(sitk_from_linear_transform_node(loaded)), resampling, atol=1e-9)


def test_segmentation_save_load(context, tmp_path):
    labels = sitk.Image(20, 20, 10, sitk.sitkUInt8)
    labels.SetSpacing((1.0, 1.0, 2.0))
    labels[2:8, 3:9, 1:4] = 1
    labels[10:15, 10:18, 5:9] = 2
    label_node = add_volume_from_sitk(context, labels, "labels", labelmap=True)
    segmentation = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert context.segmentations.ImportLabelmapToSegmentationNode(label_node, segmentation)
    path = mrml_io.save_node(context, segmentation, tmp_path / "s.seg.nrrd")
    loaded = mrml_io.load_segmentation(context, path)
    assert loaded.GetSegmentation().GetNumberOfSegments() == 2
    exported = context.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    context.segmentations.ExportAllSegmentsToLabelmapNode(loaded, exported)
    voxels = sitk.GetArrayFromImage(sitk_from_volume(exported))
    assert sorted(np.unique(voxels, return_counts=True)[1][1:]) == [6 * 6 * 3, 5 * 8 * 4]


def test_missing_and_unreadable_files(context, tmp_path):
    with pytest.raises(InputError, match="not found"):
        mrml_io.load_volume(context, tmp_path / "absent.nrrd")
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_text("this is not an image")
    with pytest.raises(InputError, match="cannot read volume garbage.nrrd"):
        mrml_io.load_volume(context, garbage)
    text = tmp_path / "notes.txt"
    text.write_text("a text file")
    with pytest.raises(InputError, match="not a volume file"):
        mrml_io.load_volume(context, text)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="cannot read transform"):
        mrml_io.load_transform(context, broken)


def test_an_input_volume_is_decompressed_once_and_its_voxels_held_once(context, tmp_path):
    image = oblique_image()
    path = tmp_path / "v.nii.gz"
    sitk.WriteImage(image, str(path), True)
    node, series = load_input_volume(context, path)
    assert series is None and node.GetStorageNode().GetFileName() == str(path)  # the user's file, not the copy
    assert node.GetDisplayNode() is None  # whoever shows it makes one
    shared = sitk_from_volume(node)
    assert_same_image(shared, image)
    assert sitk_from_volume(node) is shared
    voxels = numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars())
    assert np.shares_memory(voxels, sitk.GetArrayViewFromImage(shared))
    assert not list(Path(tempfile.gettempdir()).glob(f"ctmr-read-{os.getpid()}-*"))  # the copy is gone
    moved = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    set_linear_transform_node_from_sitk(moved, sitk_from_matrix(np.diag([1.0, 1.0, 1.0, 1.0]) + np.eye(4, k=3) * 5))
    node.SetAndObserveTransformNodeID(moved.GetID())
    placed = sitk_from_volume(node)  # another geometry: a copy of its own
    assert placed is not shared and np.allclose(np.subtract(placed.GetOrigin(), shared.GetOrigin()), [-5, 0, 0])
