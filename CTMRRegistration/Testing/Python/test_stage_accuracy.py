"""The affine and deformable stages against ground truth, and the stage guard.

A known smooth warp (scaling like the phantom's plus a random B-spline, ground_truth.py) is applied to the
bundled MR; registering the CT to the warped MR must recover the warp on top of the result for the original
MR. The guard must discard a stage that worsens the alignment."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import move_header, rigid_pose
from ground_truth import synthetic_warp, warp_recovery_errors

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, sitk_from_matrix
from CTMRRegistrationLib.core.masks import ct_body_mask, foreground_mask
from CTMRRegistrationLib.elastix.parameters import read_parameter_file, write_parameter_file
from CTMRRegistrationLib.qa.jacobian import jacobian_statistics
from CTMRRegistrationLib.qa.segmentation_metrics import overlap_metrics
from CTMRRegistrationLib.registration.stage_guard import EdgeCue, guard_stage

needs_executable = pytest.mark.skipif(shutil.which("elastix") is None, reason="no elastix executable on PATH")
FULL = ("rigid", "affine", "deformable")
REPOSITORY = Path(__file__).resolve().parents[3]
AIR_POCKETS = Path(__file__).resolve().parents[1] / "Data" / "porcine_air_pockets.json"  # bench/porcine_landmarks.py


def _shared(name: str) -> Path | None:
    """../shared/data/`name`, or beside (or inside) $CTMR_SHARED_DATA; None when absent."""
    places = [REPOSITORY.parent / "shared" / "data" / name]
    if os.environ.get("CTMR_SHARED_DATA"):
        root = Path(os.environ["CTMR_SHARED_DATA"])
        places = [root / name, root.parent / name] + places
    return next((place for place in places if place.is_dir()), None)


def _register(ct, mr, start, stages, **options):
    return register_images(ct, mr, RegistrationOptions(initialization="none", initial_matrix=start, stages=stages,
                                                       backend="elastix", threads=2, **options))


@pytest.fixture(scope="module")
def warp(sample_mr):
    return synthetic_warp(sample_mr, "MR", seed=1)


@pytest.fixture(scope="module")
def recovered(sample_ct, sample_mr, reference_ct_to_mr, warp):
    """The guarded rigid -> affine -> deformable chain: (result on the original MR, result on the warped MR).
    Each stage is measured on its own result (`stage_transforms`, kept or not by the guard)."""
    return tuple(_register(sample_ct, mr, reference_ct_to_mr, FULL) for mr in (sample_mr, warp.deformed))


def _stage_errors(results, stage, warp, points):
    """Warp recovery error of one stage's own results on the original and the warped MR."""
    return warp_recovery_errors(*(r.stage_transforms[stage] for r in results), warp, points)


@pytest.mark.slow
@needs_executable
def test_deformable_stage_recovers_a_known_warp_that_rigid_cannot(recovered, warp, ct_object_points):
    rigid = _stage_errors(recovered, "rigid", warp, ct_object_points)
    deformable = warp_recovery_errors(*(r.transform for r in recovered), warp, ct_object_points)
    assert np.percentile(rigid, 95) > 3.0, "the warp is too weak to tell the stages apart"
    assert np.percentile(deformable, 95) < 1.5
    assert all(r.deformable for r in recovered), "the guard discarded a deformable stage that helped"


@pytest.mark.slow
@needs_executable
def test_affine_stage_recovers_the_scaling_better_than_rigid(recovered, warp, ct_object_points):
    rigid = _stage_errors(recovered, "rigid", warp, ct_object_points)
    affine = _stage_errors(recovered, "affine", warp, ct_object_points)
    assert np.mean(affine) < np.mean(rigid) and np.percentile(affine, 95) < np.percentile(rigid, 95)


@pytest.fixture(scope="module")
def full_resolution_phantom():
    folder = _shared("mridir-porcine")
    if folder is None or not (folder / "ct_fullres.nii.gz").exists():
        pytest.skip("the full-resolution porcine pair is not here (../shared/data/mridir-porcine)")
    return tuple(sitk.ReadImage(str(folder / name)) for name in ("ct_fullres.nii.gz", "mr_t2_fullres.nii.gz"))


def _air_pocket_tre(transform, central_only: bool = False) -> np.ndarray:
    """Distances (mm) between the air pockets' MR points and their CT points mapped by `transform`; with
    `central_only`, of the pairs in the central MR slab alone."""
    pairs = json.loads(AIR_POCKETS.read_text())
    ct_points, mr_points = np.array(pairs["ct_points_lps"]), np.array(pairs["mr_points_lps"])
    if central_only:
        low, high = pairs["central_mr_z_mm"]
        keep = (mr_points[:, 2] >= low) & (mr_points[:, 2] <= high)
        ct_points, mr_points = ct_points[keep], mr_points[keep]
    return np.linalg.norm([np.subtract(transform.TransformPoint(p.tolist()), q)
                           for p, q in zip(ct_points, mr_points)], axis=1)


@pytest.fixture(scope="module")
def full_resolution_run(full_resolution_phantom, reference_ct_to_mr):
    """The guarded rigid -> affine -> deformable chain on the full-resolution pair."""
    return _register(*full_resolution_phantom, reference_ct_to_mr, FULL)


@pytest.mark.slow
@needs_executable
def test_each_stage_brings_the_phantom_air_pockets_closer(full_resolution_run):
    """Air pockets located independently in the phantom's full-resolution CT and MR (126 pairs at sub-voxel air
    centres; thin-plate floor 1.1 mm; bench/porcine_landmarks.py): rigid, then the guarded affine and deformable
    stages on their 1 mm grid, each lowers the mean TRE of the stage before (docs/validation.md has the figures)."""
    full = full_resolution_run
    assert {stage: record["kept"] for stage, record in full.metrics["stage_guard"].items()} == {
        "affine": True, "deformable": True}
    rigid_tre, affine_tre, deformable_tre = (_air_pocket_tre(t).mean() for t in (full.stage_transforms["rigid"],
                                                                   full.linear_transform, full.transform))
    assert rigid_tre < 4.0
    assert affine_tre < rigid_tre - 0.4
    assert deformable_tre < affine_tre - 0.5
    assert deformable_tre < 2.3


@pytest.mark.slow
@needs_executable
def test_rigid_stage_on_the_fine_grid_comes_closer_on_the_deformed_phantom(full_resolution_phantom,
                                                                          full_resolution_run, reference_ct_to_mr):
    """The phantom deformed between its scans, so the rigid stage compromises. On the 1 mm grid (`fine_rigid`)
    it lands closer to the air pockets of the central MR slab than on the 2 mm working grid, within 0.3 mm of
    those pairs' own rigid floor (2.07 mm fitted on them alone)."""
    fine = _register(*full_resolution_phantom, reference_ct_to_mr, ("rigid",), fine_rigid=True)
    working_grid = _air_pocket_tre(full_resolution_run.stage_transforms["rigid"], central_only=True).mean()
    fine_grid = _air_pocket_tre(fine.transform, central_only=True).mean()
    assert fine_grid < 2.35
    assert fine_grid < working_grid - 0.15


@pytest.mark.slow
@needs_executable
def test_deformable_stage_recovers_a_known_warp_of_the_full_resolution_mr(full_resolution_phantom,
                                                                         full_resolution_run, reference_ct_to_mr,
                                                                         ct_object_points):
    """The same recovery at full resolution, where the stage runs on its 1 mm grid. The largest errors lie
    within 20 mm of the MR's first slice, which its 2.5 mm slices and one-sided data leave loosely held."""
    ct, mr = full_resolution_phantom
    warp = synthetic_warp(mr, "MR", seed=2)
    warped = _register(ct, warp.deformed, reference_ct_to_mr, FULL)
    errors = warp_recovery_errors(full_resolution_run.transform, warped.transform, warp, ct_object_points)
    assert warped.deformable
    assert np.percentile(errors, 95) < 1.5


@pytest.mark.slow
@needs_executable
def test_deformable_result_neither_folds_nor_tears(recovered, sample_ct):
    for result in recovered:
        jacobian = jacobian_statistics(result.transform, sample_ct, ct_body_mask(sample_ct))
        assert 0.5 < jacobian["jacobian_min"] and jacobian["jacobian_max"] < 2.0
        assert jacobian["folding_percent"] == 0.0


@pytest.mark.slow
@needs_executable
def test_guard_records_its_decisions_and_warns_of_each_discarded_stage(recovered):
    for result in recovered:
        guard = result.metrics["stage_guard"]
        assert guard.keys() == {"affine", "deformable"}
        for name, stage in guard.items():
            plausible = (0.5 < stage.get("jacobian_min", 1.0) <= stage.get("jacobian_max", 1.0) < 2.0
                         and 0.9 < stage.get("scaling_min", 1.0) <= stage.get("scaling_max", 1.0) < 1.1)
            assert stage["kept"] == (stage["edge_alignment_after"] > stage["edge_alignment_before"] and plausible)
            assert any(f"{name} stage was discarded" in w for w in result.warnings) != stage["kept"]
        assert guard["deformable"]["kept"] and result.deformable


@pytest.mark.slow
@needs_executable
def test_guard_discards_an_affine_stage_that_worsens_the_result(sample_ct, sample_mr, reference_ct_to_mr,
                                                                 ct_object_points, tmp_path):
    """Correlation is the wrong metric across modalities: the affine stage it drives moves the anatomy away."""
    bad = read_parameter_file(resources.parameter_file("Affine"))
    bad["Metric"] = ["AdvancedNormalizedCorrelation"]
    write_parameter_file(bad, tmp_path / "bad_affine.txt")
    guarded = _register(sample_ct, sample_mr, reference_ct_to_mr, ("rigid", "affine"),
                        presets=[tmp_path / "bad_affine.txt"])
    rigid, discarded = (guarded.stage_transforms[stage] for stage in ("rigid", "affine"))
    rigid_points, discarded_points = (np.array([t.TransformPoint(p.tolist()) for p in ct_object_points])
                                      for t in (rigid, discarded))
    assert np.percentile(np.linalg.norm(discarded_points - rigid_points, axis=1), 95) > 3.0, "the preset did no harm"
    assert guarded.metrics["stage_guard"]["affine"]["kept"] is False
    assert any("affine stage was discarded" in w for w in guarded.warnings)
    np.testing.assert_array_equal(guarded.matrix, matrix_from_sitk(rigid))


def test_edge_cue_drops_when_the_images_are_shifted_and_guard_keeps_the_better_transform(sample_ct, sample_mr,
                                                                                      reference_ct_to_mr):
    cue = EdgeCue(sample_ct, sample_mr, foreground_mask(sample_ct, "CT"), foreground_mask(sample_mr, "MR"))
    aligned = sitk_from_matrix(reference_ct_to_mr)
    for axis in range(3):
        moved = reference_ct_to_mr.copy()
        moved[axis, 3] += 4.0
        assert cue.score(sitk_from_matrix(moved)) < 0.98 * cue.score(aligned), f"4 mm along axis {axis}"
    moved = sitk_from_matrix(moved)
    metrics, warnings = {}, []
    assert guard_stage("affine", cue, aligned, moved, False, metrics, warnings) is aligned
    assert metrics["stage_guard"]["affine"]["kept"] is False and len(warnings) == 1
    assert guard_stage("affine", cue, moved, aligned, False, metrics, warnings) is aligned
    assert metrics["stage_guard"]["affine"]["kept"] is True and len(warnings) == 1
    assert guard_stage("affine", cue, aligned, moved, True, metrics, warnings) is moved
    centre = np.asarray(sample_ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in sample_ct.GetSize()]))
    shrink = np.diag([1.0, 1.0, 0.85, 1.0])
    shrink[:3, 3] = centre - shrink[:3, :3] @ centre
    shrunk = sitk_from_matrix(reference_ct_to_mr @ shrink)
    assert guard_stage("affine", cue, aligned, shrunk, False, metrics, warnings) is aligned
    assert metrics["stage_guard"]["affine"]["scaling_min"] == pytest.approx(0.85, abs=0.001)
    assert "scales the previous result by 0.85-1.00" in warnings[-1]
    squeezed = sitk.CompositeTransform([aligned, sitk.ScaleTransform(3, [0.6, 0.6, 0.6])])
    assert guard_stage("deformable", cue, aligned, squeezed, False, metrics, warnings) is aligned
    assert metrics["stage_guard"]["deformable"]["jacobian_min"] == pytest.approx(0.216, abs=0.01)
    assert "Jacobian determinant spans" in warnings[-1]


@pytest.mark.slow
@needs_executable
@pytest.mark.parametrize("patient", ["STS_002", "STS_003"])
def test_nonrigid_stages_do_not_lower_the_thigh_tumour_dice(patient):
    """sts-thigh: CT and MR aligned by the dataset's makers, tumour outlined in both; the MR header is moved by a
    small pose. The MR shows only part of the CT's thigh (37 % and 59 % shared): unguarded, the deformable stage
    squeezed the CT object into the MR's view (STS_003: Jacobian down to 0.09, Dice 0.87 -> 0.73), and on the
    1 mm grid affine + deformable moved the STS_002 tumour (Dice 0.91 -> 0.86) while edges aligned 2-6 % better.
    The stages are not run on such partial views, so the tumour stays where rigid put it."""
    folder = _shared("sts-thigh")
    if folder is None:
        pytest.skip("no ../shared/data/sts-thigh")
    read = lambda part: sitk.ReadImage(str(folder / patient / part / "nifti" / "image" / "image.nii.gz"))  # noqa: E731
    mask = lambda part: sitk.ReadImage(str(folder / patient / part / "nifti" / "mask" / "mask.nii.gz")) > 0  # noqa: E731
    ct, mr, ct_tumour, mr_tumour = read("CT"), read("MR_T1"), mask("CT"), mask("MR_T1")
    centre = mr.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in mr.GetSize()])
    pose = rigid_pose((2.0, -3.0, 2.5), (4.0, -3.0, 3.0), centre=centre)
    mr, mr_tumour = move_header(mr, pose), move_header(mr_tumour, pose)
    dice, results = {}, {}
    for stages in (("rigid",), FULL):
        results[stages] = _register(ct, mr, np.eye(4), stages)
        dice[stages] = overlap_metrics(ct_tumour, sitk.Resample(mr_tumour, ct, results[stages].transform,
                                                                sitk.sitkNearestNeighbor, 0))["dice"]
    assert dice[("rigid",)] > 0.8
    assert dice[FULL] >= dice[("rigid",)] - 0.005
    guard = results[FULL].metrics["stage_guard"]
    assert all(not guard[stage]["run"] and guard[stage]["shared_object_fraction"] < 0.7
               for stage in ("affine", "deformable"))
    assert sum("was not run" in warning for warning in results[FULL].warnings) == 2
