"""The affine and deformable stages against ground truth, and the stage guard.

A known smooth warp (scaling like the phantom's plus a random B-spline, ground_truth.py) is applied to the
bundled MR; registering the CT to the warped MR must recover the warp on top of the result for the original
MR. The guard must discard a stage that worsens the alignment."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ground_truth import synthetic_warp, warp_recovery_errors

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import sitk_from_matrix
from CTMRRegistrationLib.core.masks import ct_body_mask, foreground_mask
from CTMRRegistrationLib.elastix.parameters import read_parameter_file, write_parameter_file
from CTMRRegistrationLib.qa.jacobian import jacobian_statistics
from CTMRRegistrationLib.registration.stage_guard import EdgeCue, guard_stage

needs_executable = pytest.mark.skipif(shutil.which("elastix") is None, reason="no elastix executable on PATH")
FULL = ("rigid", "affine", "deformable")
AIR_POCKETS = Path(__file__).resolve().parents[1] / "Data" / "porcine_air_pockets.json"  # bench/porcine_landmarks.py


def _register(ct, mr, start, stages, **options):
    return register_images(ct, mr, RegistrationOptions(initialization="none", initial_matrix=start, stages=stages,
                                                       backend="elastix", threads=2, **options))


@pytest.fixture(scope="module")
def warp(sample_mr):
    return synthetic_warp(sample_mr, "MR", seed=1)


@pytest.fixture(scope="module")
def recovered(sample_ct, sample_mr, reference_ct_to_mr, warp):
    """Per stage set: (result on the original MR, result on the warped MR); the affine stage alone is forced
    past the guard, to measure the stage itself."""
    runs = {("rigid",): {}, ("rigid", "affine"): {"force_stages": True}, FULL: {}}
    return {stages: tuple(_register(sample_ct, mr, reference_ct_to_mr, stages, **options)
                          for mr in (sample_mr, warp.deformed))
            for stages, options in runs.items()}


@pytest.mark.slow
@needs_executable
def test_deformable_stage_recovers_a_known_warp_that_rigid_cannot(recovered, warp, ct_object_points):
    rigid = warp_recovery_errors(*(r.transform for r in recovered[("rigid",)]), warp, ct_object_points)
    deformable = warp_recovery_errors(*(r.transform for r in recovered[FULL]), warp, ct_object_points)
    assert np.percentile(rigid, 95) > 3.0, "the warp is too weak to tell the stages apart"
    assert np.percentile(deformable, 95) < 1.5
    assert all(r.deformable for r in recovered[FULL]), "the guard discarded a deformable stage that helped"


@pytest.mark.slow
@needs_executable
def test_affine_stage_recovers_the_scaling_better_than_rigid(recovered, warp, ct_object_points):
    rigid = warp_recovery_errors(*(r.transform for r in recovered[("rigid",)]), warp, ct_object_points)
    affine = warp_recovery_errors(*(r.transform for r in recovered[("rigid", "affine")]), warp, ct_object_points)
    assert np.mean(affine) < np.mean(rigid) and np.percentile(affine, 95) < np.percentile(rigid, 95)


@pytest.mark.slow
@needs_executable
def test_each_kept_stage_lowers_the_error_on_the_phantom_air_pockets(recovered):
    """Air pockets located independently in the phantom's CT and MR: the guarded affine stage is no worse than
    rigid (on this pair the guard discards it) and the deformable stage lowers the mean TRE further."""
    pairs = json.loads(AIR_POCKETS.read_text())
    ct_points, mr_points = np.array(pairs["ct_points_lps"]), np.array(pairs["mr_points_lps"])

    def mean_tre(transform):
        return np.linalg.norm([np.subtract(transform.TransformPoint(p.tolist()), q)
                               for p, q in zip(ct_points, mr_points)], axis=1).mean()

    rigid, full = recovered[("rigid",)][0], recovered[FULL][0]
    assert mean_tre(full.linear_transform) <= mean_tre(rigid.transform) + 0.01
    assert mean_tre(full.transform) < mean_tre(full.linear_transform)


@pytest.mark.slow
@needs_executable
def test_deformable_result_neither_folds_nor_tears(recovered, sample_ct):
    for result in recovered[FULL]:
        jacobian = jacobian_statistics(result.transform, sample_ct, ct_body_mask(sample_ct))
        assert 0.5 < jacobian["jacobian_min"] and jacobian["jacobian_max"] < 2.0
        assert jacobian["folding_percent"] == 0.0


@pytest.mark.slow
@needs_executable
def test_guard_records_its_decisions_and_warns_of_each_discarded_stage(recovered):
    for result in recovered[FULL]:
        guard = result.metrics["stage_guard"]
        assert guard.keys() == {"affine", "deformable"}
        for name, stage in guard.items():
            assert stage["kept"] == (stage["edge_alignment_after"] > stage["edge_alignment_before"])
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
    presets = {"affine": tmp_path / "bad_affine.txt"}
    guarded = _register(sample_ct, sample_mr, reference_ct_to_mr, ("rigid", "affine"), presets=presets)
    forced = _register(sample_ct, sample_mr, reference_ct_to_mr, ("rigid", "affine"), presets=presets,
                       force_stages=True)
    rigid_points = np.array([guarded.transform.TransformPoint(p.tolist()) for p in ct_object_points])
    forced_points = np.array([forced.transform.TransformPoint(p.tolist()) for p in ct_object_points])
    assert np.percentile(np.linalg.norm(forced_points - rigid_points, axis=1), 95) > 3.0, "the bad preset did no harm"
    assert guarded.metrics["stage_guard"]["affine"]["kept"] is False
    assert any("affine stage was discarded" in w for w in guarded.warnings)
    assert forced.metrics["stage_guard"]["affine"] == {**guarded.metrics["stage_guard"]["affine"], "kept": True,
                                                        "forced": True}


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
