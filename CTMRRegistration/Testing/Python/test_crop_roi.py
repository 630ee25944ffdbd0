"""The region a registration works on, as an ROI node: exact round trip, cropped volumes that keep their voxel
positions, and the round trip a user makes (automatic region -> edit -> register within it)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import move_header, p95_distance, rigid_pose

from CTMRRegistrationLib.core.imaging import physical_corners
from CTMRRegistrationLib.mrml import node_io
from CTMRRegistrationLib.mrml.crop_roi import cropped_volume, roi_corners, roi_from_corners
from CTMRRegistrationLib.mrml.logic import RegistrationLogic
from CTMRRegistrationLib.mrml.nodes import add_volume_from_sitk, ijk_to_world_lps, sitk_from_volume


def test_an_oblique_box_round_trips_through_an_roi_node(context, sample_ct):
    oblique = move_header(sample_ct, rigid_pose((20.0, -35.0, 10.0), (5.0, 0.0, -7.0)))
    corners = physical_corners(sitk.RegionOfInterest(oblique, [30, 20, 25], [10, 15, 5]), faces=True)
    roi = roi_from_corners(context, corners, "region")
    np.testing.assert_allclose(np.sort(roi_corners(roi), axis=0), np.sort(corners, axis=0), atol=1e-6)


def test_cropped_volumes_keep_their_voxel_positions(context, sample_ct):
    node = add_volume_from_sitk(context, sample_ct, "CT")
    start = [25, 20, 10]
    region = sitk.RegionOfInterest(sample_ct, [40, 30, 20], start)
    roi = roi_from_corners(context, physical_corners(region, faces=True), "region")
    cropped = cropped_volume(context, node, roi)
    assert cropped.GetImageData().GetDimensions() == region.GetSize()
    image = sitk_from_volume(cropped)
    np.testing.assert_allclose(ijk_to_world_lps(cropped), ijk_to_world_lps(node) @ _shift(start),
                               atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(region))


def _shift(index) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = index
    return matrix


@pytest.mark.slow
def test_an_edited_region_changes_what_is_registered(context, sample_ct, sample_mr, reference_ct_to_mr,
                                                     ct_object_points):
    pose = rigid_pose((0.0, 0.0, 90.0), (30.0, -20.0, 10.0))
    ct = add_volume_from_sitk(context, sample_ct, "CT")
    mr = add_volume_from_sitk(context, move_header(sample_mr, pose), "MR")
    logic = RegistrationLogic(context)
    automatic = logic.register(ct, mr, qa=False, add_registered_region=True, apply_to_moving=False)
    roi = automatic.registered_region_node
    np.testing.assert_allclose(roi_corners(roi), automatic.crop_region, atol=1e-6)
    size = np.array(roi.GetSize())
    roi.SetSize(*(size * np.array([1.0, 1.0, 0.5])))  # the user halves the region along z
    edited = logic.register(ct, mr, qa=False, crop_roi=roi, add_registered_region=True, apply_to_moving=False)
    registered = edited.crop_region.max(axis=0) - edited.crop_region.min(axis=0)
    edited_extent = roi_corners(roi).max(axis=0) - roi_corners(roi).min(axis=0)
    assert np.all(np.abs(registered - edited_extent) <= np.asarray(sample_ct.GetSpacing()) + 1e-6)
    sizes = automatic.metrics["cropped_sizes"]["fixed"], edited.metrics["cropped_sizes"]["fixed"]
    assert sizes[1][2] < 0.6 * sizes[0][2] and sizes[1][:2] == sizes[0][:2]
    # half the phantom constrains a rigid fit less (it deformed between the scans): still captured, a few mm off
    assert p95_distance(edited.matrix, pose @ reference_ct_to_mr, ct_object_points) < 10.0


@pytest.mark.slow
def test_the_command_line_writes_and_reads_the_region(context, tmp_path, sample_ct, sample_mr):
    fixed, moving = tmp_path / "ct.nii.gz", tmp_path / "mr.nii.gz"
    sitk.WriteImage(sample_ct, str(fixed))
    sitk.WriteImage(sample_mr, str(moving))
    base = [sys.executable, "-m", "CTMRRegistrationLib", "--fixed", str(fixed), "--moving", str(moving),
            "--no-qa", "--json", "--initialization", "center", "--bias-correction", "off"]  # the region, not the pose
    first = subprocess.run(base + ["--output-transform", str(tmp_path / "t1.h5"),
                                   "--registered-region", str(tmp_path / "region.mrk.json")],
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["outputs"]["registered_region"] == str(tmp_path / "region.mrk.json")
    second = subprocess.run(base + ["--output-transform", str(tmp_path / "t2.h5"),
                                    "--crop-roi", str(tmp_path / "region.mrk.json")], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    sizes = [json.loads(run.stdout)["metrics"]["cropped_sizes"]["fixed"] for run in (first, second)]
    assert sizes[0] == sizes[1]
    assert node_io.load_markups(context, tmp_path / "region.mrk.json").IsA("vtkMRMLMarkupsROINode")
