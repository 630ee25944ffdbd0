"""N4 bias-field correction removes a known smooth multiplicative field from the bundled MR, and fits no finer
field on a small field of view than its extent allows."""

import numpy as np
import pytest
import SimpleITK as sitk

from CTMRRegistrationLib.core.masks import mr_foreground_mask
from CTMRRegistrationLib.registration.bias_field import (
    POSE_DETAIL,
    TISSUE_DETAIL,
    correct_bias_field,
    fitting_levels,
)


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


@pytest.mark.parametrize("detail, expected", [
    (POSE_DETAIL, {40.0: 1, 88.0: 1, 118.0: 2, 235.0: 3, 500.0: 3}),  # thigh MRs 88 and 118 mm, the phantom's 235
    (TISSUE_DETAIL, {40.0: 1, 88.0: 2, 118.0: 3, 235.0: 4, 500.0: 4}),
])
def test_fitting_levels_keep_the_finest_span_above_the_minimum(detail, expected):
    levels = {}
    for extent_mm in expected:
        image = sitk.Image([64, 64, 32], sitk.sitkFloat32)
        image.SetSpacing([extent_mm / 64, 300.0 / 64, 300.0 / 32])  # the shortest side decides
        levels[extent_mm] = fitting_levels(image, detail)
        assert extent_mm / 2 ** (levels[extent_mm] - 1) >= detail.min_span_mm or levels[extent_mm] == 1
    assert levels == expected
