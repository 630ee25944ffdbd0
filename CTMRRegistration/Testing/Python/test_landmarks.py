"""Landmark registration on point arrays: exact recovery, FRE and TRE against Fitzpatrick's analytic
expectations under Gaussian localisation noise, leave-one-out errors, inverse symmetry, swapped points,
label pairing and the rejection of unusable lists."""

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from conftest import rigid_pose

from CTMRRegistrationLib import InputError
from CTMRRegistrationLib.core.geometry import transform_points
from CTMRRegistrationLib.landmarks.correspondence import direction_check, find_swapped_pairs, order_by_labels
from CTMRRegistrationLib.landmarks.fit import fit_landmark_transform
from CTMRRegistrationLib.landmarks.fit_errors import (
    expected_fre_rms,
    fle_from_fre,
    landmark_errors,
    leave_one_out_errors,
    predicted_tre_rms,
    target_errors,
)
from CTMRRegistrationLib.mrml.landmark_registration import register_points
from CTMRRegistrationLib.mrml.landmark_registration import vtk_transform as landmark_vtk_transform

RNG_SEED = 7
FIXED = np.array([[-60.0, -20, -15], [55, -25, 10], [5, 45, -20], [-10, 5, 30], [30, 30, 25],
                  [-40, 35, 5], [20, -40, -25], [-25, -45, 20]])
TRUE_RIGID = rigid_pose((20.0, -10.0, 35.0), (5.0, -7.0, 12.0))
TARGETS = np.array([[0.0, 0.0, 0.0], [80.0, 0.0, 0.0], [0.0, 60.0, 40.0]])


def similarity(scale: float) -> np.ndarray:
    matrix = TRUE_RIGID.copy()
    matrix[:3, :3] *= scale
    return matrix


AFFINE = np.array([[1.1, 0.2, -0.05, 3.0], [-0.1, 0.9, 0.15, -4.0], [0.05, -0.2, 1.2, 8.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("kind, truth", [("rigid", TRUE_RIGID), ("similarity", similarity(1.3)), ("affine", AFFINE)])
def test_noise_free_landmarks_give_the_exact_transform(kind, truth):
    fit = fit_landmark_transform(FIXED, transform_points(truth, FIXED), kind)
    np.testing.assert_allclose(fit.matrix, truth, atol=1e-9)
    errors = landmark_errors(fit, FIXED, transform_points(truth, FIXED))
    assert errors.fre_rms < 1e-9 and np.nanmax(errors.leave_one_out) < 1e-9


def test_thin_plate_spline_interpolates_and_reduces_to_affine():
    moving = transform_points(AFFINE, FIXED)
    spline = fit_landmark_transform(FIXED, moving, "tps")
    np.testing.assert_allclose(spline.weights, 0.0, atol=1e-9)
    np.testing.assert_allclose(spline.transform_points(TARGETS), transform_points(AFFINE, TARGETS), atol=1e-9)
    bent = moving + np.random.default_rng(RNG_SEED).normal(0, 3.0, moving.shape)
    spline = fit_landmark_transform(FIXED, bent, "tps")
    np.testing.assert_allclose(spline.transform_points(FIXED), bent, atol=1e-9)


def test_thin_plate_spline_matches_vtk_and_its_sampled_field():
    bent = transform_points(TRUE_RIGID, FIXED) + np.random.default_rng(RNG_SEED).normal(0, 3.0, FIXED.shape)
    spline = fit_landmark_transform(FIXED, bent, "tps")
    flip = np.array([-1.0, -1.0, 1.0])
    vtk_transform = landmark_vtk_transform(spline)
    assert isinstance(vtk_transform, vtk.vtkThinPlateSplineTransform)
    for point in TARGETS:
        mapped = np.array(vtk_transform.TransformPoint(*(point * flip))) * flip
        np.testing.assert_allclose(mapped, spline.transform_points(point[None])[0], atol=1e-6)
    reference = sitk.Image([12, 10, 9], sitk.sitkUInt8)
    reference.SetSpacing([10.0, 12.0, 11.0])
    reference.SetOrigin([-60.0, -55.0, -45.0])
    field = spline.to_sitk(reference)
    node = reference.TransformIndexToPhysicalPoint([7, 3, 5])
    np.testing.assert_allclose(field.TransformPoint(node), spline.transform_points(np.array([node]))[0], atol=1e-6)


def noisy_trials(kind: str, sigma: float, trials: int, truth=TRUE_RIGID):
    """FRE^2 per trial and squared TRE at TARGETS, fixed points exact, moving points with N(0, sigma^2) noise."""
    rng = np.random.default_rng(RNG_SEED)
    clean, target_truth = transform_points(truth, FIXED), transform_points(truth, TARGETS)
    fre_squared, tre_squared = [], []
    for _ in range(trials):
        moving = clean + rng.normal(0.0, sigma, FIXED.shape)
        fit = fit_landmark_transform(FIXED, moving, kind)
        fre_squared.append(landmark_errors(fit, FIXED, moving).fre_rms ** 2)
        tre_squared.append(target_errors(fit, TARGETS, target_truth).per_point ** 2)
    return np.mean(fre_squared), np.mean(tre_squared, axis=0)


@pytest.mark.parametrize("kind, truth", [("rigid", TRUE_RIGID), ("affine", AFFINE)])
def test_fre_matches_fitzpatrick_expectation(kind, truth):
    sigma = 1.0
    fre_squared, _ = noisy_trials(kind, sigma, 1000, truth)
    expected = expected_fre_rms(np.sqrt(3) * sigma, len(FIXED), kind)  # (1 - p / 3N) <FLE^2>, <FLE^2> = 3 sigma^2
    assert np.sqrt(fre_squared) == pytest.approx(expected, rel=0.03)
    assert fle_from_fre(expected, len(FIXED), kind) == pytest.approx(np.sqrt(3) * sigma)


def test_tre_matches_fitzpatrick_prediction():
    sigma = 1.0
    _, tre_squared = noisy_trials("rigid", sigma, 1000)
    predicted = predicted_tre_rms(FIXED, TARGETS, np.sqrt(3) * sigma)
    np.testing.assert_allclose(np.sqrt(tre_squared), predicted, rtol=0.06)
    at_centroid = predicted_tre_rms(FIXED, FIXED.mean(axis=0)[None], np.sqrt(3) * sigma)[0]
    assert at_centroid == pytest.approx(np.sqrt(3) * sigma / np.sqrt(len(FIXED)))  # FLE / sqrt(N)


def test_leave_one_out_exposes_a_misplaced_landmark():
    moving = transform_points(TRUE_RIGID, FIXED)
    moving[3] += [4.0, 0.0, 3.0]  # 5 mm off; every other point exact
    loo = leave_one_out_errors(FIXED, moving, "rigid")
    assert loo[3] == pytest.approx(5.0, abs=1e-9)  # the others predict it exactly
    assert np.argmax(loo) == 3 and np.delete(loo, 3).max() < 5.0


def test_target_errors_of_a_known_offset():
    offset = np.eye(4)
    offset[:3, 3] = [0.0, 3.0, 4.0]
    errors = target_errors(TRUE_RIGID @ offset, TARGETS, transform_points(TRUE_RIGID, TARGETS))
    np.testing.assert_allclose(errors.per_point, 5.0)
    assert errors.mean == pytest.approx(5.0) and errors.max == pytest.approx(5.0)


@pytest.mark.parametrize("kind", ["rigid", "similarity"])
def test_swapping_the_lists_gives_the_inverse(kind):
    moving = transform_points(similarity(1.2), FIXED) + np.random.default_rng(RNG_SEED).normal(0, 1.5, FIXED.shape)
    forward = fit_landmark_transform(FIXED, moving, kind)
    backward = fit_landmark_transform(moving, FIXED, kind)
    np.testing.assert_allclose(backward.matrix @ forward.matrix, np.eye(4), atol=1e-9)
    check = direction_check(FIXED, moving, kind)
    scale = 1.0 if kind == "rigid" else check.scale
    assert check.backward_rms == pytest.approx(check.forward_rms / scale, rel=1e-9)
    assert check.inverse_residual_mm < 1e-9


def test_rms_asymmetry_of_lists_in_different_units():
    """5.7 mm one way and 53 mm the other: a similarity fit between lists whose units differ ~9.3 times."""
    moving = transform_points(TRUE_RIGID, FIXED) + np.random.default_rng(RNG_SEED).normal(0, 0.6, FIXED.shape)
    moving_cm_like = moving * 9.3
    check = direction_check(FIXED, moving_cm_like, "similarity")
    assert check.forward_rms / check.backward_rms == pytest.approx(9.3, rel=0.01)
    assert any("different units" in w for w in check.warnings())
    rigid = direction_check(FIXED, moving, "rigid")
    assert rigid.forward_rms == pytest.approx(rigid.backward_rms, rel=1e-12)
    assert rigid.wrong_list_rms > 20 * rigid.forward_rms  # the transform applied to the To list instead


def test_swapped_pair_is_named():
    moving = transform_points(TRUE_RIGID, FIXED) + np.random.default_rng(RNG_SEED).normal(0, 0.8, FIXED.shape)
    assert find_swapped_pairs(FIXED, moving).swapped_pairs == []
    moving[[2, 5]] = moving[[5, 2]]
    check = find_swapped_pairs(FIXED, moving)
    assert check.swapped_pairs == [(2, 5)]
    assert check.rms_after < 0.3 * check.rms_before
    labels = [f"P{i}" for i in range(len(FIXED))]
    result = register_points(FIXED, moving, "rigid", labels, labels)
    assert any("P2 and P5" in warning for warning in result.warnings)


def test_lists_in_different_orders_are_paired_by_label():
    moving = transform_points(TRUE_RIGID, FIXED)
    labels = [f"L{i}" for i in range(len(FIXED))]
    shuffle = np.random.default_rng(RNG_SEED).permutation(len(FIXED))
    order, note = order_by_labels(labels, [labels[i] for i in shuffle])
    np.testing.assert_array_equal(shuffle[order], np.arange(len(FIXED)))
    result = register_points(FIXED, moving[shuffle], "rigid", labels, [labels[i] for i in shuffle])
    np.testing.assert_allclose(result.transform.matrix, TRUE_RIGID, atol=1e-9)
    assert "by label" in note and result.swap_check.swapped_pairs == []


@pytest.mark.parametrize("fixed, moving, kind, message", [
    (FIXED[:2], FIXED[:2], "rigid", "at least 3"),
    (FIXED, FIXED[:-1], "rigid", "differ in length"),
    (np.outer(np.arange(5.0), [1.0, 2.0, -1.0]), FIXED[:5], "rigid", "collinear"),
    (FIXED[:5] * [1, 1, 0], FIXED[:5], "affine", "one plane"),
    (FIXED[:3], FIXED[:3], "tps", "at least 4"),
    (np.where(FIXED == FIXED[0, 0], np.nan, FIXED), FIXED, "rigid", "NaN"),
    (FIXED, FIXED, "spline", "unknown landmark transform"),
])
def test_unusable_lists_are_rejected(fixed, moving, kind, message):
    with pytest.raises(InputError, match=message):
        fit_landmark_transform(fixed, moving, kind)
