"""Common-region crop: exact geometry, and the crop keeps what both images show."""

import numpy as np
import SimpleITK as sitk
from conftest import move_header, rigid_pose

from CTMRRegistrationLib.core.masks import ct_body_mask, mr_foreground_mask
from CTMRRegistrationLib.registration.common_region import common_region, crop_to_points


def test_crop_keeps_voxels_at_their_physical_positions(sample_ct):
    oblique = move_header(sample_ct, rigid_pose((20.0, -35.0, 10.0), (5.0, 0.0, -7.0)))
    points = np.array([[-30.0, -20.0, -40.0], [25.0, 30.0, 35.0]])
    cropped = crop_to_points(oblique, points, margin_mm=5.0)
    assert np.prod(cropped.GetSize()) < 0.5 * np.prod(oblique.GetSize())
    for index in ([0, 0, 0], [s - 1 for s in cropped.GetSize()], [s // 2 for s in cropped.GetSize()]):
        point = cropped.TransformIndexToPhysicalPoint(index)
        original = oblique.TransformPhysicalPointToIndex(point)
        assert cropped[index] == oblique[original]


def test_common_region_of_the_pair_covers_both_objects(sample_ct, sample_mr, reference_ct_to_mr):
    ct_mask, mr_mask = ct_body_mask(sample_ct), mr_foreground_mask(sitk.Cast(sample_mr, sitk.sitkFloat32))
    fixed_box, moving_box = common_region(ct_mask, mr_mask, reference_ct_to_mr)
    np.testing.assert_allclose(moving_box, fixed_box @ reference_ct_to_mr[:3, :3].T + reference_ct_to_mr[:3, 3])
    cropped_ct, cropped_mr = crop_to_points(ct_mask, fixed_box), crop_to_points(mr_mask, moving_box)
    assert np.prod(cropped_ct.GetSize()) < np.prod(ct_mask.GetSize())
    kept = sitk.GetArrayViewFromImage(cropped_ct).sum() / sitk.GetArrayViewFromImage(ct_mask).sum()
    assert kept > 0.99
    kept = sitk.GetArrayViewFromImage(cropped_mr).sum() / sitk.GetArrayViewFromImage(mr_mask).sum()
    assert kept > 0.95
