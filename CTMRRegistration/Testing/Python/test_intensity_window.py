"""The intensity window of the elastix stages: each image clamped to the middle of its object's values, so that a
histogram metric spends its bins on the tissues, not on bone, air and padding."""

import numpy as np
import pytest
import SimpleITK as sitk

from CTMRRegistrationLib import Cancelled, RegistrationOptions, register_images
from CTMRRegistrationLib.core.imaging import intensity_window
from CTMRRegistrationLib.core.masks import foreground_mask
from CTMRRegistrationLib.registration.pipeline import INTENSITY_PERCENT, _ElastixInputs, _fine_inputs


def test_window_of_the_ct_object_spans_its_soft_tissue_not_its_bone_or_air(sample_ct):
    low, high = intensity_window(sample_ct, foreground_mask(sample_ct, "CT"), 2.0)
    assert -400.0 < low < -60.0 and 60.0 < high < 600.0  # fat (about -100 HU) to muscle (about 50) inside
    values = sitk.GetArrayViewFromImage(sample_ct)
    assert values.min() < -1000.0 and values.max() > 1000.0, "the bundled CT holds padding and bone"


def test_window_covers_the_chosen_share_of_the_masked_values():
    rng = np.random.default_rng(0)
    array = rng.normal(100.0, 10.0, size=(20, 30, 40)).astype(np.float32)
    array[:, :, :4] = 5000.0  # outside the mask: must not move the window
    image = sitk.GetImageFromArray(array)
    mask = sitk.GetImageFromArray((np.arange(40) >= 4).astype(np.uint8)[None, None, :].repeat(20, 0).repeat(30, 1))
    low, high = intensity_window(image, mask, 5.0)
    inside = array[:, :, 4:]
    assert abs(np.mean(inside < low) - 0.05) < 0.002
    assert abs(np.mean(inside > high) - 0.05) < 0.002
    assert high < 200.0
    empty_mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty_mask.CopyInformation(image)
    assert intensity_window(image, empty_mask, 5.0)[1] == 5000.0  # no object: the whole image's values


def test_only_the_windowed_stages_see_clamped_images(sample_ct, sample_mr):
    coarse = _ElastixInputs(sample_ct, sample_mr, foreground_mask(sample_ct, "CT"), foreground_mask(sample_mr, "MR"),
                            ("CT", "MR"))
    fine = _fine_inputs(coarse, sample_ct, sample_mr, ("CT", "MR"), RegistrationOptions(), set())
    low, high = intensity_window(fine.fixed, fine.fixed_mask, INTENSITY_PERCENT)
    clamped = sitk.GetArrayFromImage(fine.clamped(fine.fixed, "fixed"))
    assert clamped.min() == np.float32(low) and clamped.max() == np.float32(high)
    assert fine.swapped().windows[1] == fine.windows[0]
    assert coarse.clamped(sample_ct, "fixed") is sample_ct  # inputs without windows stay as they are


class _FirstJob:
    """A backend that keeps the first elastix job it is given and stops the registration there."""

    name = "first job"

    def describe(self) -> str:
        return self.name

    def run(self, job, progress=None, cancelled=None):
        self.job = job
        raise Cancelled("the job is all this test needs")


def test_rigid_stage_sees_both_images_clamped_to_their_windows(sample_ct, sample_mr, reference_ct_to_mr):
    backend = _FirstJob()
    with pytest.raises(Cancelled):
        register_images(sample_mr, sample_ct, RegistrationOptions(initialization="none", backend=backend,
                                                                  initial_matrix=np.linalg.inv(reference_ct_to_mr)))
    ct, mr = (sitk.GetArrayViewFromImage(image) for image in (backend.job.fixed, backend.job.moving))
    assert -1000.0 < ct.min() < -60.0 and 60.0 < ct.max() < 1000.0  # the CT is fixed inside: no air, no dense bone
    mr_object = sitk.GetArrayViewFromImage(sample_mr)[sitk.GetArrayViewFromImage(foreground_mask(sample_mr, "MR")) > 0]
    assert mr.min() > np.percentile(mr_object, 0.5) and mr.max() < mr_object.max()
