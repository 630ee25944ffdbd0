"""Quality assessment on the bundled pair: the reference transform is `ok`, a transform 20 mm / 15 degrees
off and one turned 180 degrees are `failed`, with the MR fixed too; the verdict's grading rule, inverse
consistency, ground-truth metrics beside the verdict, and deformable transforms. test_qa_symmetry.py checks
that the assessment does not depend on which image is fixed."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rigid_pose

from CTMRRegistrationLib.core.errors import Cancelled
from CTMRRegistrationLib.core.geometry import sitk_from_matrix, transform_points
from CTMRRegistrationLib.core.imaging import shrink_to_spacing
from CTMRRegistrationLib.core.masks import ct_body_mask
from CTMRRegistrationLib.elastix.backends import choose_backend
from CTMRRegistrationLib.landmarks.fit import fit_landmark_transform
from CTMRRegistrationLib.qa.assess import QAOptions, assess
from CTMRRegistrationLib.qa.consistency import inverse_consistency, perturbed_starts
from CTMRRegistrationLib.qa.verdict import LIMITS, grade_cues

OPTIONS = QAOptions(restarts=2, threads=2)


@pytest.fixture(scope="module")
def object_centre(sample_ct) -> np.ndarray:
    mask = sitk.GetArrayFromImage(ct_body_mask(sample_ct))
    index = np.argwhere(mask > 0)[:, ::-1].mean(axis=0)
    return np.asarray(sample_ct.TransformContinuousIndexToPhysicalPoint(index.tolist()))


def off_by(reference, degrees, millimetres, centre) -> np.ndarray:
    """`reference` after moving the fixed space by a rigid motion about `centre`."""
    return reference @ rigid_pose(degrees, millimetres, centre)


@pytest.fixture(scope="module")
def reference_qa(sample_ct, sample_mr, reference_ct_to_mr):
    return assess(sample_ct, sample_mr, reference_ct_to_mr, options=OPTIONS)


@pytest.mark.slow
def test_reference_transform_is_ok(reference_qa):
    assert reference_qa.verdict == "ok", reference_qa.reasons
    metrics = reference_qa.metrics
    assert metrics["foreground_overlap"] > 0.9 and metrics["edge_alignment"] > 1.8
    assert metrics["restart_spread_mm"] < 2.0 and metrics["restart_drift_mm"] < 4.0
    assert metrics["jacobian_determinant"] == pytest.approx(1.0, abs=1e-6)
    assert reference_qa.seconds < 30.0 and set(reference_qa.stage_seconds) >= {"prepare", "edges", "restarts"}


@pytest.mark.parametrize("degrees, millimetres", [((10.0, -8.0, 6.0), (12.0, -10.0, 12.0)),  # 20 mm, 15 degrees
                                                   ((180.0, 0.0, 0.0), (0.0, 0.0, 0.0))])
@pytest.mark.slow
def test_wrong_transforms_fail(degrees, millimetres, sample_ct, sample_mr, reference_ct_to_mr, object_centre):
    wrong = off_by(reference_ct_to_mr, degrees, millimetres, object_centre)
    result = assess(sample_ct, sample_mr, wrong, options=OPTIONS)
    assert result.verdict == "failed"
    assert len(result.reasons) >= 2 and any("edges" in reason for reason in result.reasons)


@pytest.mark.slow
def test_mr_fixed_direction(sample_ct, sample_mr, reference_ct_to_mr, object_centre):
    """Restarts run with the CT as elastix's fixed image whatever the direction assessed."""
    result = assess(sample_mr, sample_ct, np.linalg.inv(reference_ct_to_mr), options=OPTIONS)
    assert result.verdict == "ok", result.reasons
    assert result.metrics["fixed_modality"] == "MR" and result.metrics["restart_spread_mm"] < 2.0


def test_grading_rule():
    good = {"foreground_overlap": 0.95, "edge_alignment": 2.0, "edge_agreeing_regions": 0.9,
            "edge_peak_contrast": 0.13, "restart_drift_mm": 1.5, "restart_spread_mm": 0.5, "restart_offset_mm": 1.4}
    assert grade_cues(good).verdict == "ok" and grade_cues(good).reasons == []
    one_doubt = good | {"edge_alignment": 1.6}
    assert grade_cues(one_doubt).verdict == "check"
    assert "edge_alignment = 1.6 (below 1.7)" in grade_cues(one_doubt).reasons[0]
    assert grade_cues(one_doubt | {"restart_spread_mm": 6.0}).verdict == "failed"
    assert grade_cues(good | {"restart_drift_mm": 20.0}).verdict == "failed"
    assert grade_cues(good | {"restarts_without_overlap": 1}).verdict == "failed"
    assert grade_cues(good | {"edge_alignment": None, "inverse_consistency_p95_mm": None}).verdict == "ok"
    # the two edge cues read the same evidence: both in doubt is one doubt (a correct thigh result reads
    # 1.52 and 0.62), but a doubt of another family beside them fails
    edges_low = good | {"edge_alignment": 1.5, "edge_agreeing_regions": 0.6}
    assert grade_cues(edges_low).verdict == "check" and len(grade_cues(edges_low).reasons) == 2
    assert grade_cues(edges_low | {"restart_offset_mm": 6.0}).verdict == "failed"
    assert grade_cues(good | {"edge_agreeing_regions": 0.45}).verdict == "failed"
    # ... and so does a peak contrast in doubt (a thigh pose 22 mm off, restarts staying there)
    assert grade_cues(edges_low | {"edge_peak_contrast": 0.065, "restart_drift_mm": 2.8}).verdict == "failed"
    # the three restart cues are one family: a right result on a cropped phantom whose restarts disagree
    # (spread 8.2 mm, drift 8.7 mm, offset 5.7 mm) is one doubt
    wandering = good | {"restart_spread_mm": 8.2, "restart_drift_mm": 8.7, "restart_offset_mm": 5.7}
    assert grade_cues(wandering).verdict == "check" and len(grade_cues(wandering).reasons) == 3
    # restarts that settle 8 mm or more away fail the result whatever the edges say (a phantom MR holding
    # 40 % of the slices, the result turned 10 degrees: p95 error 14 mm, every edge cue within limits)
    assert grade_cues(good | {"restart_offset_mm": 10.2, "restart_drift_mm": 10.9}).verdict == "failed"
    # neither image sees much of the other's object
    assert grade_cues(good | {"view_coverage": 0.15}).verdict == "check"
    assert grade_cues(good | {"view_coverage": 0.05}).verdict == "failed"


def test_inverse_consistency_and_perturbed_starts(reference_ct_to_mr, object_centre):
    points = object_centre + np.random.default_rng(0).normal(0.0, 40.0, (500, 3))
    exact = inverse_consistency(reference_ct_to_mr, np.linalg.inv(reference_ct_to_mr), points)
    assert exact["inverse_consistency_max_mm"] < 1e-9
    shifted = np.linalg.inv(reference_ct_to_mr)
    shifted[:3, 3] += [3.0, 0.0, 4.0]
    assert inverse_consistency(reference_ct_to_mr, sitk_from_matrix(shifted), points)[
        "inverse_consistency_p95_mm"] == pytest.approx(5.0)
    starts = perturbed_starts(np.eye(4), object_centre, 2, millimetres=4.0, degrees=4.0)
    moved = [transform_points(start, object_centre[None])[0] - object_centre for start in starts]
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 4.0)
    np.testing.assert_allclose(moved[0], -moved[1])


@pytest.mark.slow
def test_ground_truth_is_reported_not_graded(sample_ct, sample_mr, reference_ct_to_mr, object_centre):
    fixed_targets = object_centre + np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0], [0.0, -25.0, 20.0]])
    moving_targets = transform_points(reference_ct_to_mr, fixed_targets)
    labels = sitk.Cast(ct_body_mask(sample_ct), sitk.sitkUInt8)
    moving_labels = sitk.Resample(labels, sample_mr, sitk_from_matrix(np.linalg.inv(reference_ct_to_mr)),
                                  sitk.sitkNearestNeighbor, 0)  # the CT body carried into the MR's space
    result = assess(sample_ct, sample_mr, reference_ct_to_mr, fixed_targets=fixed_targets,
                    moving_targets=moving_targets, fixed_segmentation=labels, moving_segmentation=moving_labels,
                    segment_names={1: "body"}, options=QAOptions(restarts=0))
    targets, body = result.metrics["targets"], result.metrics["segmentations"]
    assert targets["after"]["tre_max_mm"] < 1e-6 and targets["before"]["tre_mean_mm"] > 20.0
    assert body["after"]["body"]["dice"] > 0.97 and body["before"]["body"]["dice"] < 0.8
    assert body["after"]["body"]["hd95_mm"] <= 2.0 < body["before"]["body"]["hd95_mm"]  # one voxel of the 2 mm grid
    assert result.verdict == "ok"


@pytest.mark.slow
def test_deformable_transform_gets_jacobian_statistics(sample_ct, sample_mr, reference_ct_to_mr, object_centre):
    """A thin-plate spline through reference landmarks with 1 mm jitter: smooth, no folding."""
    fixed_points = object_centre + np.array([[-50.0, -30, -40], [50, -30, 40], [0, 50, -40], [0, 0, 50],
                                             [40, 40, 0], [-40, 20, 30]])
    moving_points = transform_points(reference_ct_to_mr, fixed_points)
    moving_points += np.random.default_rng(1).normal(0.0, 1.0, moving_points.shape)
    spline = fit_landmark_transform(fixed_points, moving_points, "tps").to_sitk(shrink_to_spacing(sample_ct, 4.0))
    result = assess(sample_ct, sample_mr, spline, options=OPTIONS)
    assert result.metrics["folding_percent"] == 0.0 and 0.9 < result.metrics["jacobian_mean"] < 1.1
    assert "restart_drift_mm" not in result.metrics and result.verdict == "ok", result.reasons


@pytest.mark.slow
def test_thick_slices_are_assessed(sample_ct, sample_mr, reference_ct_to_mr):
    """A clinical MR grid: 1 mm in-plane, 3 mm slices, coarser than the 2 mm QA grid along one axis only."""
    spacing = (1.0, 1.0, 3.0)
    size = [int(n * s / t) for n, s, t in zip(sample_mr.GetSize(), sample_mr.GetSpacing(), spacing)]
    thick = sitk.Resample(sample_mr, size, sitk.Transform(), sitk.sitkLinear, sample_mr.GetOrigin(), spacing,
                          sample_mr.GetDirection())
    result = assess(sample_ct, thick, reference_ct_to_mr, options=QAOptions(restarts=0, threads=2))
    assert result.verdict == "ok", result.reasons
    assert result.metrics["edge_alignment"] > 1.7


class RecordingBackend:
    """A real backend that counts its runs and asks for a cancel once `cancel_after` runs have finished."""

    def __init__(self, backend, cancel_after=None):
        self.backend, self.cancel_after, self.runs = backend, cancel_after, 0
        self.name = backend.name

    def describe(self) -> str:
        return f"recording {self.backend.describe()}"

    def run(self, job, progress=None, cancelled=None):
        maps = self.backend.run(job, progress=progress, cancelled=cancelled)
        self.runs += 1
        return maps

    def cancelled(self) -> bool:
        return self.cancel_after is not None and self.runs >= self.cancel_after


@pytest.mark.slow
def test_restarts_run_on_the_chosen_backend_and_stop_on_cancel(sample_ct, sample_mr, reference_ct_to_mr):
    recording = RecordingBackend(choose_backend())
    result = assess(sample_ct, sample_mr, reference_ct_to_mr, options=QAOptions(restarts=2, threads=2,
                                                                                 backend=recording))
    assert recording.runs == 2 and result.backend.startswith("recording ")
    stopping = RecordingBackend(choose_backend(), cancel_after=1)
    with pytest.raises(Cancelled):
        assess(sample_ct, sample_mr, reference_ct_to_mr, options=QAOptions(restarts=2, threads=2, backend=stopping),
               cancelled=stopping.cancelled)
    assert stopping.runs == 1


def test_a_cancel_before_the_assessment_runs_nothing(sample_ct, sample_mr, reference_ct_to_mr):
    recording = RecordingBackend(choose_backend())
    with pytest.raises(Cancelled):
        assess(sample_ct, sample_mr, reference_ct_to_mr, options=QAOptions(backend=recording), cancelled=lambda: True)
    assert recording.runs == 0


@pytest.mark.slow
def test_every_graded_cue_is_produced(sample_ct, sample_mr, reference_ct_to_mr, reference_qa):
    """A misspelt cue would be silently ungraded (a cue that is absent counts as ok): each limit's cue must be
    among the metrics of a linear assessment with a backward transform, of a deformable one, or of one whose
    restarts find no overlap."""
    produced = set(reference_qa.metrics)
    backward = sitk_from_matrix(np.linalg.inv(reference_ct_to_mr))
    produced |= set(assess(sample_ct, sample_mr, reference_ct_to_mr, backward,
                           options=QAOptions(restarts=0)).metrics)
    bspline = sitk.BSplineTransformInitializer(sample_ct, [3, 3, 3])
    deformable = sitk.CompositeTransform([sitk_from_matrix(reference_ct_to_mr), bspline])
    produced |= set(assess(sample_ct, sample_mr, deformable, options=QAOptions(restarts=0)).metrics)
    far = reference_ct_to_mr.copy()
    far[2, 3] += 200.0  # the objects barely overlap: the restarts find no overlap
    produced |= set(assess(sample_ct, sample_mr, far, options=QAOptions(restarts=1)).metrics)
    assert {limit.cue for limit in LIMITS} <= produced, {limit.cue for limit in LIMITS} - produced
