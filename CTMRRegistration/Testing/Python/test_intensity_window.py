"""The intensity window of the affine and deformable stages: each image clamped to the middle of its object's
values, so that a histogram metric spends its bins on the tissues, not on bone, air and padding."""

import numpy as np
import SimpleITK as sitk

from CTMRRegistrationLib import RegistrationOptions
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
    assert coarse.clamped(sample_ct, "fixed") is sample_ct  # the rigid stage's inputs
