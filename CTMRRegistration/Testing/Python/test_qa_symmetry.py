"""The quality assessment does not depend on which image is fixed: registering one way, inverting and assessing
the other way gives the same verdict, the same cues within their tolerances and the same error bound, on a
synthetic CT/MR pair, the bundled porcine pair and a human thigh pair; and the error bound covers known errors.

Tolerances: the image cues are computed from both sides on the same grids, so they agree to their printed
precision (IMAGE_CUE_TOLERANCE); the restarts run the same elastix jobs whichever image is fixed (the matrix
and the inverse of its inverse are snapped to the same numbers), so their cues come out equal too, and
RESTART_TOLERANCE_MM leaves room for a backend that is not bit-reproducible.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import move_header, rigid_pose

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.qa.assess import QAOptions, assess
from CTMRRegistrationLib.qa.consistency import (
    SharedPoints,
    distances_both_ways,
    elastix_roles_swapped,
    inverse_consistency,
    shared_points,
)
from CTMRRegistrationLib.qa.images import prepare_qa_images
from CTMRRegistrationLib.qa.verdict import ERROR_FLOOR_MM, LIMITS, error_bound_mm

OPTIONS = QAOptions(restarts=2, threads=2)
IMAGE_CUES = ("object_coverage", "moving_object_coverage", "view_coverage", "foreground_overlap", "edge_alignment",
              "edge_peak_contrast", "edge_best_shift_mm", "edge_agreeing_regions")
RESTART_CUES = ("restart_drift_mm", "restart_spread_mm", "restart_offset_mm")
IMAGE_CUE_TOLERANCE = 1e-3
RESTART_TOLERANCE_MM = 0.5
SWAPPED_NAMES = {"object_coverage": "moving_object_coverage", "moving_object_coverage": "object_coverage"}


def thigh_folder() -> Path:
    shared = os.environ.get("CTMR_SHARED_DATA")
    base = Path(shared).parent if shared else Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    return base / "sts-thigh"


def _ellipsoid_phantom(spacing, size, origin, values: dict, seed: int) -> sitk.Image:
    """A body with an organ, a fat pocket and a bone rod (LPS mm, not symmetric), with the tissues' `values`."""
    z, y, x = (index * spacing[2 - axis] + origin[2 - axis]
               for axis, index in enumerate(np.indices(size[::-1]).astype(float)))

    def inside(centre, radii):
        return sum(((c - m) / r) ** 2 for c, m, r in zip((x, y, z), centre, radii)) <= 1.0

    array = np.full(z.shape, values["air"], dtype=np.float32)
    array[inside((0, 0, 0), (45, 35, 50))] = values["body"]
    array[inside((12, -8, 10), (15, 10, 20))] = values["organ"]
    array[inside((-18, 10, -15), (8, 12, 9))] = values["fat"]
    array[(((x + 5) / 5) ** 2 + ((y - 12) / 5) ** 2 <= 1) & (np.abs(z) < 40)] = values["bone"]
    array += np.random.default_rng(seed).normal(0.0, 0.03 * abs(values["body"] - values["air"]), array.shape)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    return sitk.SmoothingRecursiveGaussian(image, 1.0)


@pytest.fixture(scope="module")
def synthetic_pair():
    """A CT-like and an MR-like image of one object on different grids (2.5 mm CT slices, 1.5 mm MR voxels, the
    origins a fraction of a voxel apart as in real pairs: no voxel centre maps exactly onto half a voxel, where
    nearest-neighbour resampling would go either way), the MR's header turned and moved by a known pose: the
    true CT->MR transform is that pose."""
    ct = _ellipsoid_phantom((1.0, 1.0, 2.5), (110, 100, 48), (-55.0, -50.0, -60.0),
                            {"air": -1000.0, "body": 40.0, "organ": 80.0, "fat": -100.0, "bone": 900.0}, 1)
    mr = _ellipsoid_phantom((1.5, 1.5, 1.5), (80, 70, 80), (-60.3, -52.7, -59.4),
                            {"air": 0.0, "body": 300.0, "organ": 550.0, "fat": 900.0, "bone": 60.0}, 2)
    pose = rigid_pose((20.0, -10.0, 35.0), (30.0, -20.0, 15.0))
    return ct, move_header(mr, pose), pose


def both_ways(fixed, moving, matrix, options=OPTIONS):
    return assess(fixed, moving, matrix, options=options), assess(moving, fixed, np.linalg.inv(matrix), options=options)


def assert_same(forward, backward) -> None:
    """Equal verdicts and bounds, and every cue equal within its tolerance (the coverages exchange names)."""
    assert forward.verdict == backward.verdict, (forward.reasons, backward.reasons)
    for cue in IMAGE_CUES:
        other = backward.metrics[SWAPPED_NAMES.get(cue, cue)]
        if forward.metrics[cue] is None:
            assert other is None, cue
        else:
            assert forward.metrics[cue] == pytest.approx(other, abs=IMAGE_CUE_TOLERANCE), cue
    for cue in RESTART_CUES:
        assert forward.metrics[cue] == pytest.approx(backward.metrics[cue], abs=RESTART_TOLERANCE_MM), cue
    assert forward.metrics["error_bound_mm"] == pytest.approx(backward.metrics["error_bound_mm"],
                                                              abs=RESTART_TOLERANCE_MM)
    assert forward.metrics["fixed_modality"] == backward.metrics["moving_modality"]


def shifted(matrix: np.ndarray, millimetres: float, direction=(0.6, -0.8, 0.0)) -> np.ndarray:
    """`matrix` after moving the fixed space by `millimetres` along `direction`: p95 error `millimetres`."""
    motion = np.eye(4)
    motion[:3, 3] = millimetres * np.asarray(direction) / np.linalg.norm(direction)
    return matrix @ motion


def test_distances_both_ways_do_not_depend_on_the_direction():
    rng = np.random.default_rng(0)
    a, b = rigid_pose((5.0, -3.0, 20.0), (4.0, 1.0, -2.0)), rigid_pose((4.0, -2.0, 19.0), (3.0, 2.0, -2.5))
    points = SharedPoints(rng.normal(0.0, 40.0, (200, 3)), rng.normal(0.0, 40.0, (150, 3)))
    exchanged = SharedPoints(points.moving, points.fixed)
    np.testing.assert_allclose(np.sort(distances_both_ways(a, b, points)),
                               np.sort(distances_both_ways(np.linalg.inv(a), np.linalg.inv(b), exchanged)))
    translation = np.eye(4)
    translation[:3, 3] = [3.0, 0.0, 4.0]
    np.testing.assert_allclose(distances_both_ways(a @ translation, a, points), 5.0)
    forward = inverse_consistency(a, np.linalg.inv(b), points.fixed, points.moving)
    backward = inverse_consistency(np.linalg.inv(b), a, points.moving, points.fixed)
    assert forward == backward


def test_shared_points_and_elastix_roles_exchange_with_the_images(synthetic_pair):
    ct, mr, pose = synthetic_pair
    forward, backward = prepare_qa_images(ct, mr), prepare_qa_images(mr, ct)
    points, exchanged = shared_points(forward, pose), shared_points(backward, np.linalg.inv(pose))
    np.testing.assert_array_equal(points.fixed, exchanged.moving)
    np.testing.assert_array_equal(points.moving, exchanged.fixed)
    assert not elastix_roles_swapped(forward) and elastix_roles_swapped(backward)  # the CT is elastix's fixed


def test_error_bound_grows_with_the_restart_offset():
    good = {"restart_offset_mm": 1.0, "restart_spread_mm": 0.5, "restart_drift_mm": 1.2, "edge_best_shift_mm": 1.0}
    bounds = [error_bound_mm(good | {"restart_offset_mm": offset, "restart_drift_mm": offset + 0.2})
              for offset in (1.0, 4.0, 10.0, 25.0)]
    assert bounds == sorted(bounds) and bounds[-1] > 25.0
    assert error_bound_mm({"edge_alignment": 2.0}) is None  # no restarts, no bound


@pytest.mark.slow
def test_synthetic_pair_reads_the_same_both_ways_and_the_bound_covers_known_errors(synthetic_pair):
    """The true transform, and the same 4 and 8 mm off: the bound is above the true error, and below twice it
    (or just above the bound's floor for the true transform)."""
    ct, mr, pose = synthetic_pair
    right, wrong = both_ways(ct, mr, pose), both_ways(ct, mr, shifted(pose, 20.0))
    assert_same(*right)
    assert_same(*wrong)
    assert right[0].verdict == "ok" and wrong[0].verdict == "failed", (right[0].reasons, wrong[0].reasons)
    assert right[0].as_dict()["error_bound_mm"] == right[0].metrics["error_bound_mm"]
    for millimetres in (0.0, 4.0, 8.0):
        result = right[0] if millimetres == 0.0 else assess(ct, mr, shifted(pose, millimetres), options=OPTIONS)
        bound = result.metrics["error_bound_mm"]
        assert millimetres <= bound <= max(2.0 * millimetres, ERROR_FLOOR_MM + 0.5), result.metrics


@pytest.mark.slow
def test_porcine_pair_reads_the_same_both_ways(sample_ct, sample_mr, reference_ct_to_mr):
    """Our registration with the CT fixed, assessed CT fixed and (inverted) MR fixed; and a result 12 mm / 8
    degrees off the reference."""
    registered = np.asarray(register_images(sample_ct, sample_mr, RegistrationOptions(threads=2)).matrix)
    wrong = reference_ct_to_mr @ rigid_pose((8.0, 0.0, 0.0), (6.0, -8.0, 6.0))
    for matrix, verdict in ((registered, "ok"), (wrong, "failed")):
        forward, backward = both_ways(sample_ct, sample_mr, matrix)
        assert_same(forward, backward)
        assert forward.verdict == verdict, forward.reasons


@pytest.mark.slow
def test_thigh_pair_reads_the_same_both_ways():
    """A human CT/T1 pair, the CT cut to 70 % of its slices (each image shows part of the other's object),
    registered from the dataset makers' alignment: the coverages exchange, the verdict and every other cue stay."""
    folder = thigh_folder() / "STS_002"
    if not folder.is_dir():
        pytest.skip(f"the thigh pairs are not here: {folder}")
    ct, mr = (sitk.ReadImage(str(folder / part / "nifti" / "image" / "image.nii.gz")) for part in ("CT", "MR_T1"))
    ct = sitk.RegionOfInterest(ct, [ct.GetWidth(), ct.GetHeight(), int(0.7 * ct.GetDepth())], [0, 0, 0])
    registered = register_images(ct, mr, RegistrationOptions(threads=2, initial_matrix=np.eye(4))).matrix
    forward, backward = both_ways(ct, mr, np.asarray(registered))
    assert_same(forward, backward)
    assert forward.verdict != "failed", forward.reasons
    assert {limit.cue for limit in LIMITS} & set(forward.metrics)
