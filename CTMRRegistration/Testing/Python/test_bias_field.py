"""N4 bias-field correction removes a known smooth multiplicative field from the bundled MR."""

import numpy as np
import SimpleITK as sitk

from CTMRRegistrationLib.core.masks import mr_foreground_mask
from CTMRRegistrationLib.registration.bias_field import correct_bias_field


def test_known_bias_field_is_removed(sample_mr):
    mr = sitk.Cast(sample_mr, sitk.sitkFloat32)
    mask = sitk.GetArrayFromImage(mr_foreground_mask(mr)) > 0
    z, y, x = np.indices(mask.shape)
    field = np.exp(0.35 * (x - x.mean()) / x.max() - 0.25 * (z - z.mean()) / z.max())
    biased = sitk.GetImageFromArray(sitk.GetArrayFromImage(mr) * field)
    biased.CopyInformation(mr)

    corrected_plain = sitk.GetArrayFromImage(correct_bias_field(mr))[mask]
    corrected_biased = sitk.GetArrayFromImage(correct_bias_field(biased))[mask]
    residual = np.log(corrected_biased / corrected_plain)
    applied = np.log(field[mask])
    assert residual.std() < 0.2 * applied.std()


def test_correction_keeps_the_grid_and_leaves_the_input_alone(sample_mr):
    mr = sitk.Cast(sample_mr, sitk.sitkFloat32)
    before = sitk.GetArrayFromImage(mr).copy()
    corrected = correct_bias_field(mr)
    assert corrected.GetSize() == mr.GetSize() and corrected.GetOrigin() == mr.GetOrigin()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mr), before)
