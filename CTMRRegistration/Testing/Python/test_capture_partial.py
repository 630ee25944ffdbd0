"""Capture on real anatomy and partial fields of view, and the second chance after a failed verdict.

Human thigh CT/MR pairs (../shared/data/sts-thigh, aligned by the dataset's makers: reference = identity) and
the bundled porcine pair, cropped with SimpleITK, the MR's header moved by known poses. Two errors, p95 in mm:
- against ground truth (the pose composed with the reference), over tumour-region points (thigh) or CT object
  points in both crops (phantom). Neither reference is a rigid optimum of these images (the thigh was scanned
  on different days, the phantom deformed): registration started *at* the reference ends 3.7 and 8.3 mm
  (thigh STS_002, STS_003) and 5-7 mm (phantom crops) from it. So the ground-truth bound is 12 mm, which
  still separates the right basin from wrong ones (tens of mm off);
- against the pose composed with the registration of the same images started at the reference: whether the
  search captured the pose the pipeline reaches from the truth (3 mm thigh, 5 mm phantom).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import move_header, p95_distance, rigid_pose

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.core.geometry import transform_points
from CTMRRegistrationLib.qa.assess import QAOptions, assess
from CTMRRegistrationLib.qa.second_chance import retry_if_failed

OPTIONS = RegistrationOptions(threads=2)
GROUND_TRUTH_P95_MM = 12.0
OFFSET_250_MM = 250.0 * np.array([0.6, -0.72, 0.35]) / np.linalg.norm([0.6, -0.72, 0.35])


def thigh_folder() -> Path:
    shared = os.environ.get("CTMR_SHARED_DATA")
    base = Path(shared).parent if shared else Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    return base / "sts-thigh"


def crop(image: sitk.Image, low, high) -> sitk.Image:
    """The part of `image` between fractions `low` and `high` of its extent along each index axis."""
    size = np.array(image.GetSize())
    start, stop = (np.array(low) * size).astype(int), (np.array(high) * size).astype(int)
    return sitk.RegionOfInterest(image, (stop - start).tolist(), start.tolist())


def points_in(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    index = np.array([image.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points])
    return np.all((index >= 0) & (index <= np.array(image.GetSize()) - 1), axis=1)


@pytest.fixture(scope="module")
def thigh():
    """Per patient: CT, MR and about 2000 points in and within 10 mm of the CT's tumour mask."""
    folder = thigh_folder()
    if not folder.is_dir():
        pytest.skip(f"the thigh pairs are not here: {folder}")
    pairs = {}
    for patient in ("STS_002", "STS_003"):
        region = sitk.BinaryDilate(sitk.ReadImage(str(folder / patient / "CT" / "nifti" / "mask" / "mask.nii.gz")),
                                   [10, 10, 3])
        voxels = np.argwhere(sitk.GetArrayFromImage(region) > 0)[:, ::-1].astype(float)
        voxels = voxels[np.random.default_rng(0).choice(len(voxels), 2000, replace=False)]
        points = np.array([region.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])
        ct, mr = (sitk.ReadImage(str(folder / patient / part / "nifti" / "image" / "image.nii.gz"))
                  for part in ("CT", "MR_T1"))
        pairs[patient] = (ct, mr, points)
    return pairs


def registered(fixed_is_ct: bool, ct: sitk.Image, mr: sitk.Image, options=OPTIONS) -> np.ndarray:
    """The CT->MR matrix found with the CT or the MR fixed."""
    if fixed_is_ct:
        result = register_images(ct, mr, options)
        assert result.status == "ok"
        return result.matrix
    result = register_images(mr, ct, options)
    assert result.status == "ok"
    return np.linalg.inv(result.matrix)


LOWER_70, UPPER_70 = ((0.0, 0.0, 0.0), (1.0, 1.0, 0.7)), ((0.0, 0.0, 0.3), (1.0, 1.0, 1.0))  # along the limb
THIGH_CASES = {  # patient, pose (degrees, mm), CT crop, MR crop, CT fixed
    "STS_002, 180 about x, CT fixed": ("STS_002", ((180.0, 0.0, 0.0), (0.0, 0.0, 0.0)), None, None, True),
    "STS_003, 250 mm and 150 about y, MR fixed": ("STS_003", ((30.0, 150.0, 0.0), tuple(OFFSET_250_MM)), None, None,
                                                  False),
    "STS_002, CT inside MR, oblique, CT fixed": ("STS_002", ((135.0, -60.0, 45.0), (35.0, 15.0, -50.0)),
                                                  ((0.3, 0.3, 0.2), (0.75, 0.8, 0.8)), None, True),
    # 40 % of the CT's length shared: three N4 fitting levels on this 80 mm MR held the result 6-10 mm along
    # the limb from the right pose
    "STS_002, both partial, oblique, MR fixed": ("STS_002", ((40.0, -110.0, 70.0), (90.0, 120.0, -60.0)),
                                                 LOWER_70, UPPER_70, False),
    # poses 0 and 2 of the capture benchmark's thigh set: the sweep's nearest rotation was 16-21 degrees off and
    # the translation tens of mm, and the search ranked poses 100-130 mm off first until its best poses climbed
    # the score (registration/local_search.py)
    "STS_002, both partial, benchmark pose 0, CT fixed": (
        "STS_002", ((-157.1156, 7.9065, 147.1613), (-35.4974, 10.7671, -84.873)), LOWER_70, UPPER_70, True),
    "STS_003, both partial, benchmark pose 2, CT fixed": (
        "STS_003", ((-98.235, 34.0281, -25.0704), (-76.8693, -64.8787, 206.7961)), LOWER_70, UPPER_70, True),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", THIGH_CASES)
def test_thigh_pose_is_captured(case, thigh):
    patient, pose_parameters, ct_crop, mr_crop, fixed_is_ct = THIGH_CASES[case]
    ct, mr, points = thigh[patient]
    if ct_crop is not None:
        ct = crop(ct, *ct_crop)
    if mr_crop is not None:
        mr = crop(mr, *mr_crop)
    points = points[points_in(ct, points) & points_in(mr, points)]
    centre = np.asarray(mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in mr.GetSize()]))
    pose = rigid_pose(*pose_parameters, centre=centre)
    found = registered(fixed_is_ct, ct, move_header(mr, pose))
    from_truth = registered(fixed_is_ct, ct, mr, RegistrationOptions(threads=2, initial_matrix=np.eye(4)))
    assert p95_distance(found, pose, points) < GROUND_TRUTH_P95_MM
    assert p95_distance(found, pose @ from_truth, points) < 3.0


@pytest.mark.slow
def test_phantom_mr_covering_part_of_the_ct_is_captured(sample_ct, sample_mr, reference_ct_to_mr, ct_object_points):
    """The MR keeps 40 % of its slices (the middle of the object), turned 180 degrees about x."""
    mr = crop(sample_mr, (0.0, 0.0, 0.3), (1.0, 1.0, 0.7))
    points = ct_object_points[points_in(mr, transform_points(reference_ct_to_mr, ct_object_points))]
    centre = np.asarray(mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in mr.GetSize()]))
    pose = rigid_pose((180.0, 0.0, 0.0), (0.0, 0.0, 0.0), centre=centre)
    found = registered(True, sample_ct, move_header(mr, pose))
    from_truth = registered(True, sample_ct, mr, RegistrationOptions(threads=2, initial_matrix=reference_ct_to_mr))
    assert p95_distance(found, pose @ reference_ct_to_mr, points) < GROUND_TRUTH_P95_MM
    assert p95_distance(found, pose @ from_truth, points) < 5.0


@pytest.mark.slow
def test_second_chance_recovers_when_the_first_candidate_is_wrong(sample_ct, sample_mr, reference_ct_to_mr,
                                                                   ct_object_points):
    """The search's real candidates, re-ranked so that a wrong basin comes first: its result fails the
    assessment and the second chance registers from the next candidate, the right one."""
    qa_options = QAOptions(threads=2, fixed_modality="CT", moving_modality="MR")

    def assess_result(result):
        return assess(sample_ct, sample_mr, result.transform, fixed_mask=result.fixed_mask,
                      moving_mask=result.moving_mask, options=qa_options)

    searched = register_images(sample_ct, sample_mr, OPTIONS)
    searched_qa = assess_result(searched)
    unchanged = retry_if_failed(sample_ct, sample_mr, searched, searched_qa, OPTIONS, assess_result)
    assert unchanged[0] is searched and unchanged[1] is searched_qa  # not failed: as is
    details = searched.metrics["initialization"]
    wrong = next(c for c in details["alternatives"] if not c["mirrored"]
                 and p95_distance(np.asarray(c["matrix"]), reference_ct_to_mr, ct_object_points) > 30.0)
    first = register_images(sample_ct, sample_mr, RegistrationOptions(threads=2, initial_matrix=np.asarray(
        wrong["matrix"])))
    first_qa = assess_result(first)
    assert first_qa.verdict == "failed" and p95_distance(first.matrix, reference_ct_to_mr, ct_object_points) > 30.0
    right = {"matrix": searched.matrix.tolist(), "score": details["score"], "mirrored": False}
    first.metrics["initialization"] = details | {"alternatives": [right]}

    recovered, recovered_qa = retry_if_failed(sample_ct, sample_mr, first, first_qa, OPTIONS, assess_result)
    assert recovered_qa.verdict in ("ok", "check")
    assert p95_distance(recovered.matrix, reference_ct_to_mr, ct_object_points) < 5.0
    second_chance = recovered.metrics["initialization"]["second_chance"]
    assert [t["verdict"] for t in second_chance["tried"]] == ["failed", recovered_qa.verdict]
    assert second_chance["winner"] == "search candidate 2"


@pytest.mark.slow
def test_assessment_tells_a_right_partial_thigh_result_from_one_10_mm_along_the_limb(thigh):
    """On a pair that shares 40 % of the CT's length, the QA restarts stay where the MR has data (they used to
    lose the overlap, which failed every result) and the verdict passes the right pose, fails 10 mm off."""
    ct, mr, points = thigh["STS_002"]
    ct, mr = crop(ct, *LOWER_70), crop(mr, *UPPER_70)
    right = registered(True, ct, mr, RegistrationOptions(threads=2, initial_matrix=np.eye(4)))
    along_limb = np.eye(4)
    along_limb[:3, 3] = 10.0 * np.asarray(ct.GetDirection()).reshape(3, 3)[:, 2]
    options = QAOptions(threads=2)
    right_qa, off_qa = (assess(ct, mr, matrix, options=options) for matrix in (right, right @ along_limb))
    assert "restarts_without_overlap" not in right_qa.metrics and right_qa.metrics["restart_drift_mm"] < 5.0
    assert right_qa.verdict in ("ok", "check"), right_qa.reasons
    assert off_qa.verdict == "failed" and off_qa.metrics["restart_drift_mm"] > 8.0
