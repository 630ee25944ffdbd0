"""Foreground masks on the bundled pair: the CT holder is left out, MR borders and noise are left out,
and the object itself is kept; the region clear of a CT's padding."""

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from CTMRRegistrationLib.core.masks import (
    CT_PADDING_BELOW_HU,
    away_from_ct_padding,
    ct_body_mask,
    mr_foreground_mask,
    padding_values,
)


def physical_grid(image: sitk.Image) -> np.ndarray:
    """(z, y, x, 3) LPS coordinates of every voxel (the bundled images have identity directions)."""
    assert np.allclose(image.GetDirection(), np.eye(3).ravel())
    axes = [o + s * np.arange(n) for o, s, n in zip(image.GetOrigin(), image.GetSpacing(), image.GetSize())]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return np.stack([x, y, z], axis=-1).transpose(2, 1, 0, 3)


def test_ct_mask_leaves_out_the_holder_and_keeps_the_object(sample_ct):
    # Hand-checked on the bundled CT: the holder's lid lies above S = 110 mm and its side wall beyond
    # L = 58 mm, both clear of the phantom; the phantom fills L -80..50 mm, S -112..105 mm.
    ct = sitk.GetArrayFromImage(sample_ct)
    mask = sitk.GetArrayFromImage(ct_body_mask(sample_ct)) > 0
    points = physical_grid(sample_ct)
    dense = ct > -400
    lid = points[..., 2] > 110.0
    wall = points[..., 0] > 58.0
    assert dense[lid].sum() > 2000 and dense[wall].sum() > 2000, "the holder is where the test expects it"
    assert not mask[lid].any()
    assert not mask[wall].any()
    phantom = (np.abs(points[..., 0] + 15.0) < 60.0) & (np.abs(points[..., 2] + 3.5) < 100.0)
    assert mask[phantom & dense].mean() > 0.97


def test_mr_mask_leaves_out_padding_borders_and_noise(sample_mr):
    mr = sitk.Cast(sample_mr, sitk.sitkFloat32)
    reference = sitk.GetArrayFromImage(mr_foreground_mask(mr)) > 0
    array = sitk.GetArrayFromImage(mr)
    grey = float(np.median(array[reference]))
    padded = array.copy()
    padded[:, :8, :] = grey  # constant grey band, as after resampling with a non-zero default
    padded[:, :, -8:] = 0.0  # black band
    far_from_object = ~ndimage.binary_dilation(reference, iterations=5)  # 10 mm
    speckle = (np.random.default_rng(1).random(array.shape) < 0.002) & far_from_object
    padded[speckle] = 1.5 * array.max()
    image = sitk.GetImageFromArray(padded)
    image.CopyInformation(mr)
    assert padding_values(image) == [0.0, grey]
    mask = sitk.GetArrayFromImage(mr_foreground_mask(image)) > 0
    assert not mask[:, :8, :].any() and not mask[:, :, -8:].any()
    assert not mask[speckle].any()
    untouched = reference.copy()
    untouched[:, :12, :] = untouched[:, :, -12:] = False
    assert mask[untouched].mean() > 0.97


def test_region_away_from_ct_padding_keeps_its_distance_from_the_reconstruction_circle(sample_ct):
    ct = sitk.GetArrayFromImage(sample_ct)
    padding = ct < CT_PADDING_BELOW_HU
    assert 0.1 < padding.mean() < 0.5, "the bundled CT is padded outside its reconstruction circle"
    away = sitk.GetArrayFromImage(away_from_ct_padding(sample_ct, 20.0)) > 0
    distance = ndimage.distance_transform_edt(~padding, sampling=sample_ct.GetSpacing()[::-1])
    assert not away[distance <= 19.0].any()
    assert away[distance >= 21.0].all()
    assert 0.2 < away.mean() < 0.8


def test_a_ct_without_padding_has_no_region_to_leave_out(sample_ct):
    filled = sitk.Maximum(sample_ct, -1024)
    assert away_from_ct_padding(filled, 20.0) is None
