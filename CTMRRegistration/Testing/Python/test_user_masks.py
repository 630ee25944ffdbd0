"""User masks: combined with the automatic masks (intersect / replace), refused when they cannot work, and on a
case where it matters (an image whose larger part is displaced, like an artefact) they keep registration on the
known pose."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import move_header, p95_distance, rigid_pose

from CTMRRegistrationLib.apps.register_cli import main
from CTMRRegistrationLib.core.errors import InputError
from CTMRRegistrationLib.core.masks import check_user_masks, combine_masks, mr_foreground_mask


def box(size=(10, 10, 10), low=(0, 0, 0), high=(10, 10, 10), spacing=(2.0, 2.0, 2.0)) -> sitk.Image:
    array = np.zeros(size[::-1], np.uint8)
    array[low[2]:high[2], low[1]:high[1], low[0]:high[0]] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def test_intersect_and_replace():
    automatic = box(low=(0, 0, 0), high=(6, 10, 10))
    user = box(size=(20, 20, 20), low=(8, 0, 0), high=(20, 20, 20), spacing=(1.0, 1.0, 1.0))  # x >= 8 mm
    intersect = sitk.GetArrayFromImage(combine_masks(automatic, user, "intersect", "fixed"))
    replace = sitk.GetArrayFromImage(combine_masks(automatic, user, "replace", "fixed"))
    assert intersect.sum() == 2 * 10 * 10 and intersect[:, :, 4:6].all()  # x in 8..10 mm: voxels 4 and 5
    assert replace.sum() == 6 * 10 * 10 and replace[:, :, 4:].all() and not replace[:, :, :4].any()
    assert combine_masks(automatic, None, "intersect", "fixed") is automatic


def test_refusals():
    with pytest.raises(InputError, match="covers nothing inside the image's automatic foreground"):
        combine_masks(box(high=(3, 10, 10)), box(low=(5, 0, 0)), "intersect", "moving")
    with pytest.raises(InputError, match="unknown mask mode"):
        check_user_masks(box(), None, "union", True)
    with pytest.raises(InputError, match="keep masks on"):
        check_user_masks(box(), None, "intersect", False)


@pytest.mark.slow
def test_moving_mask_hiding_a_displaced_part_keeps_the_known_pose(tmp_path, capsys, sample_mr):
    """MR to MR with a known pose; 60 % of the moving slices are shifted 8 mm sideways (a stand-in for an
    artefact or a part that moved). Without a mask the registration follows the larger, displaced part; a mask
    that hides it restores the pose."""
    array = sitk.GetArrayFromImage(sample_mr)
    cut = int(array.shape[0] * 0.4)
    displaced = array.copy()
    displaced[cut:] = np.roll(array[cut:], 4, axis=2)
    intact = np.zeros(array.shape, np.uint8)
    intact[:cut] = 1
    images = {}
    for name, values in (("displaced", displaced), ("mask", intact)):
        images[name] = sitk.GetImageFromArray(values)
        images[name].CopyInformation(sample_mr)
    centre = sample_mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in sample_mr.GetSize()])
    pose = rigid_pose((4.0, -3.0, 5.0), (6.0, -5.0, 4.0), centre=centre)  # fixed -> moving
    sitk.WriteImage(sample_mr, str(tmp_path / "fixed.nrrd"))
    sitk.WriteImage(move_header(images["displaced"], pose), str(tmp_path / "moving.nrrd"))
    sitk.WriteImage(move_header(images["mask"], pose), str(tmp_path / "moving_mask.nrrd"))
    foreground = sitk.GetArrayFromImage(mr_foreground_mask(sitk.Cast(sample_mr, sitk.sitkFloat32)))
    voxels = np.argwhere(foreground > 0)[::40, ::-1].astype(float)
    points = np.array([sample_mr.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])
    common = ["--fixed", str(tmp_path / "fixed.nrrd"), "--moving", str(tmp_path / "moving.nrrd"), "--output-transform",
              str(tmp_path / "t.h5"), "--fixed-modality", "MR", "--moving-modality", "MR", "--initialization", "none",
              "--threads", "1", "--no-qa", "--json"]
    errors = []
    for extra in ([], ["--moving-mask", str(tmp_path / "moving_mask.nrrd")]):
        assert main([*common, *extra]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        errors.append(p95_distance(np.asarray(result["transform"]), pose, points))
    assert errors[0] > 4.0 and errors[1] < 0.5
