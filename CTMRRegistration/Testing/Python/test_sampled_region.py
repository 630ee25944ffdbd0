"""Where the stages sample: the deformable stage clear of a CT's padding (outside its reconstruction circle), in
whichever image the CT is; the affine stage well inside its region."""

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from CTMRRegistrationLib.core.geometry import sitk_from_matrix
from CTMRRegistrationLib.core.imaging import mask_points
from CTMRRegistrationLib.core.masks import CT_PADDING_BELOW_HU, foreground_mask
from CTMRRegistrationLib.registration.pipeline import _clear_of_ct_padding, _ElastixInputs, _interior

MARGIN_MM = 6.0


def _distance_to_padding(ct: sitk.Image) -> np.ndarray:
    padding = sitk.GetArrayFromImage(ct) < CT_PADDING_BELOW_HU
    return ndimage.distance_transform_edt(~padding, sampling=ct.GetSpacing()[::-1])


def _inputs(sample_ct, sample_mr) -> _ElastixInputs:
    return _ElastixInputs(sample_ct, sample_mr, foreground_mask(sample_ct, "CT"), foreground_mask(sample_mr, "MR"),
                          ("CT", "MR"))


def test_fixed_ct_is_sampled_only_away_from_its_padding(sample_ct, sample_mr, reference_ct_to_mr):
    inputs = _inputs(sample_ct, sample_mr)
    region = sitk.GetArrayFromImage(_clear_of_ct_padding(inputs.fixed_mask, inputs, sitk_from_matrix(
        reference_ct_to_mr), MARGIN_MM)) > 0
    mask = sitk.GetArrayFromImage(inputs.fixed_mask) > 0
    distance = _distance_to_padding(sample_ct)
    assert not region[distance <= MARGIN_MM - 1.0].any()
    assert (region == mask)[distance >= MARGIN_MM + 1.0].all()
    assert (mask & (distance <= MARGIN_MM - 1.0)).sum() > 500, "the bundled CT's object reaches its padding"


def test_moving_ct_is_sampled_only_where_it_maps_away_from_its_padding(sample_ct, sample_mr, reference_ct_to_mr):
    inputs = _inputs(sample_ct, sample_mr).swapped()
    mr_to_ct = sitk_from_matrix(np.linalg.inv(reference_ct_to_mr))
    region = _clear_of_ct_padding(inputs.fixed_mask, inputs, mr_to_ct, MARGIN_MM)
    kept, dropped = (mask_points(mask) for mask in (region, sitk.And(inputs.fixed_mask, region == 0)))
    distance = _distance_to_padding(sample_ct)

    def distance_in_ct(points):
        ct_points = [mr_to_ct.TransformPoint(p.tolist()) for p in points]
        return np.array([distance[tuple(np.round(sample_ct.TransformPhysicalPointToContinuousIndex(p))[::-1]
                                        .astype(int))] for p in ct_points])

    assert len(dropped) > 200
    assert distance_in_ct(kept).min() > MARGIN_MM - 2.0
    assert np.median(distance_in_ct(dropped)) < MARGIN_MM


def test_region_is_kept_whole_when_the_margin_would_leave_less_than_half(sample_ct, sample_mr, reference_ct_to_mr):
    inputs = _inputs(sample_ct, sample_mr)
    region = _clear_of_ct_padding(inputs.fixed_mask, inputs, sitk_from_matrix(reference_ct_to_mr), 60.0)
    assert np.array_equal(sitk.GetArrayFromImage(region), sitk.GetArrayFromImage(inputs.fixed_mask))


def _box_mask(size_mm, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    """A box of `size_mm` per axis in the middle of a 160 mm cube (on `spacing`), uint8."""
    shape = [int(160 / s) for s in spacing]
    array = np.zeros(shape[::-1], np.uint8)
    low = [int((80 - b / 2) / s) for b, s in zip(size_mm, spacing)]
    high = [int((80 + b / 2) / s) for b, s in zip(size_mm, spacing)]
    array[low[2]:high[2], low[1]:high[1], low[0]:high[0]] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def test_interior_keeps_what_lies_the_margin_inside_the_region():
    region = _box_mask((140, 140, 140))  # 10 mm in leaves 63 % of it
    inside = sitk.GetArrayFromImage(_interior(region, 10.0)) > 0
    depth = ndimage.distance_transform_edt(sitk.GetArrayFromImage(region) > 0, sampling=region.GetSpacing()[::-1])
    assert inside.any() and depth[inside].min() >= 10.0
    assert not (depth[~inside] >= 10.0 + 2.0).any()  # nothing deeper is dropped (2 mm: the slice spacing)


def test_interior_keeps_a_thin_region_whole():
    region = _box_mask((80, 80, 24))  # 10 mm in from both faces would leave 4 of 24 mm
    assert np.array_equal(sitk.GetArrayFromImage(_interior(region, 10.0)), sitk.GetArrayFromImage(region))
