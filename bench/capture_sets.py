"""Human and cropped case sets of the capture benchmark (`capture_benchmark.py --sets human,cropped`).

human: the two thigh CT/MR pairs of ../shared/data/sts-thigh (reference: identity), each in three field-of-view
patterns (as given: the MR inside the CT; the CT cropped inside the MR; both partial along the limb).
cropped: the full-resolution porcine pair cropped to 40-60 % along some axes (reference: the rigid reference).
Each pattern gets N random rigid poses of the MR's header (uniform rotation, offset up to 250 mm). Ours runs
with the CT fixed and with the MR fixed, through `ctmr-register` with its quality assessment (and second
chance); the peers with the CT fixed.

Two errors, p95 in mm over tumour-region points (thigh) or CT-object points inside both crops (phantom):
against ground truth (the pose composed with the reference) and against the pose composed with our own
registration of the same crop started at the reference ("from truth"; neither reference is a rigid optimum of
these images, see docs/validation.md). A run succeeds when it is within 12 mm of ground truth and within the capture
bound of the from-truth result (3 mm thigh, 5 mm phantom). A failure is flagged when the exit status is not 0
(verdict `failed`, mirrored, error); a silent failure is a wrong result with exit status 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, p95, p95_distance, transform_points

GROUND_TRUTH_MM = 12.0
THIGH_CAPTURE_MM, PHANTOM_CAPTURE_MM = 3.0, 5.0
THIGH_CROPS = {
    "as given (MR inside CT)": (None, None),
    "CT inside MR": (((0.3, 0.3, 0.2), (0.75, 0.8, 0.8)), None),
    "both partial": (((0.0, 0.0, 0.0), (1.0, 1.0, 0.7)), ((0.0, 0.0, 0.3), (1.0, 1.0, 1.0))),
}
PHANTOM_CROPS = {
    "MR 40 % of its slices": (None, ((0.0, 0.0, 0.3), (1.0, 1.0, 0.7))),
    "CT 50 % in x and y": (((0.25, 0.25, 0.0), (0.75, 0.75, 1.0)), None),
    "both partial": (((0.0, 0.0, 0.0), (1.0, 1.0, 0.6)), ((0.0, 0.0, 0.4), (1.0, 1.0, 1.0))),
}


def crop(image: sitk.Image, box) -> sitk.Image:
    if box is None:
        return image
    size = np.array(image.GetSize())
    start, stop = (np.array(box[0]) * size).astype(int), (np.array(box[1]) * size).astype(int)
    return sitk.RegionOfInterest(image, (stop - start).tolist(), start.tolist())


def inside(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    index = np.array([image.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points])
    return np.all((index >= 0) & (index <= np.array(image.GetSize()) - 1), axis=1)


def sample_points(mask: sitk.Image, count: int = 2000) -> np.ndarray:
    voxels = np.argwhere(sitk.GetArrayFromImage(mask) > 0)[:, ::-1].astype(float)
    voxels = voxels[np.random.default_rng(0).choice(len(voxels), min(count, len(voxels)), replace=False)]
    return np.array([mask.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])


def patterns(set_name: str, shared: Path):
    """(pattern name, CT, MR, reference CT->MR, error points, capture bound) of one set."""
    if set_name == "human":
        for patient in ("STS_002", "STS_003"):
            folder = shared / "sts-thigh" / patient
            ct, mr = (sitk.ReadImage(str(folder / part / "nifti" / "image" / "image.nii.gz"))
                      for part in ("CT", "MR_T1"))
            tumour = sitk.ReadImage(str(folder / "CT" / "nifti" / "mask" / "mask.nii.gz"))
            points = sample_points(sitk.BinaryDilate(tumour, [10, 10, 3]))
            for name, (ct_box, mr_box) in THIGH_CROPS.items():
                yield f"{patient} {name}", crop(ct, ct_box), crop(mr, mr_box), np.eye(4), points, THIGH_CAPTURE_MM
    else:
        from CTMRRegistrationLib.core.imaging import shrink_to_spacing
        from CTMRRegistrationLib.core.masks import ct_body_mask

        folder = shared / "mridir-porcine"
        ct, mr = (sitk.ReadImage(str(folder / f)) for f in ("ct_fullres.nii.gz", "mr_t2_fullres.nii.gz"))
        reference = matrix_from_sitk(sitk.ReadTransform(str(folder / "reference_rigid_fixedCT_movingMR.tfm")))
        points = sample_points(ct_body_mask(shrink_to_spacing(sitk.Cast(ct, sitk.sitkFloat32), 2.0)), 3000)
        for name, (ct_box, mr_box) in PHANTOM_CROPS.items():
            yield f"phantom {name}", crop(ct, ct_box), crop(mr, mr_box), reference, points, PHANTOM_CAPTURE_MM


def run_ours_assessed(bench, fixed: Path, moving: Path, work: Path, threads: int):
    """(fixed->moving matrix or None, seconds, peak GB, exit status, verdict, second chance tried)."""
    output = work / "result.json"
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "CTMRRegistrationLib", "--fixed", str(fixed), "--moving", str(moving),
               "--output-transform", str(work / "ours.h5"), "--json", "--threads", str(threads)]
    seconds, memory, status = bench.timed(command, output)
    try:
        report = json.loads(output.read_text())
    except (OSError, ValueError):
        return None, seconds, memory, status, None, False
    if "transform" not in report:  # mirrored, or no overlap: nothing registered
        return None, seconds, memory, status, report.get("status"), False
    tried = "second_chance" in report.get("metrics", {}).get("initialization", {})
    return np.asarray(report["transform"]), seconds, memory, status, report.get("verdict"), tried


def run_set(bench, set_name: str, shared: Path, poses_per_pattern: int, seed: int, threads: int, work: Path,
            peers: bool) -> dict[str, list[dict]]:
    """Every run of one set, keyed by method."""
    methods: dict[str, list[dict]] = {"ours CT fixed": [], "ours MR fixed": []}
    if peers:
        methods |= {"elastix generic rigid": [], "moments + Mattes MI": []}
    for pattern, ct, mr, reference, all_points, capture_mm in patterns(set_name, shared):
        points = all_points[inside(ct, all_points) & inside(mr, transform_points(reference, all_points))]
        from_truth = register_images(ct, mr, RegistrationOptions(threads=threads, initial_matrix=reference)).matrix
        ct_path = work / "ct.nii.gz"
        sitk.WriteImage(ct, str(ct_path))
        centre = np.asarray(mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in mr.GetSize()]))
        for case, pose in enumerate(bench.random_poses(poses_per_pattern, seed, centre)):
            moved = work / "mr_moved.nii.gz"
            sitk.WriteImage(bench.move_header(mr, pose), str(moved))
            runs = {"ours CT fixed": run_ours_assessed(bench, ct_path, moved, work, threads)}
            backward = run_ours_assessed(bench, moved, ct_path, work, threads)
            runs["ours MR fixed"] = (None if backward[0] is None else np.linalg.inv(backward[0]), *backward[1:])
            if peers:
                no_flags = (0, None, False)  # the peers assess nothing
                runs["elastix generic rigid"] = (*bench.run_generic_rigid(ct_path, moved, work, threads), *no_flags)
                runs["moments + Mattes MI"] = (*bench.run_moments_mi(ct_path, moved, work, threads), *no_flags)
            cells = []
            for method, (matrix, seconds, memory, status, verdict, tried) in runs.items():
                truth = np.inf if matrix is None else p95_distance(matrix, pose @ reference, points)
                capture = np.inf if matrix is None else p95_distance(matrix, pose @ from_truth, points)
                success = truth < GROUND_TRUTH_MM and capture < capture_mm
                methods[method].append({"pattern": pattern, "case": case, "error_truth_p95": truth,
                                        "error_capture_p95": capture, "success": success,
                                        "flagged": status != 0, "verdict": verdict, "second_chance": tried,
                                        "seconds": seconds, "memory_gb": memory})
                mark = ("right" if success else "FLAGGED" if status != 0 else "SILENT") + f" {verdict or ''}"
                mark += " (retried)" if tried else ""
                cells.append(f"{truth:7.1f}/{capture:6.1f} mm {seconds:5.1f} s {mark:<24}")
            print(f"{pattern:<34} {case:2d} | " + " | ".join(cells), flush=True)
    return methods


def summary_rows(set_name: str, methods: dict[str, list[dict]]) -> list[str]:
    rows = []
    for method, runs in methods.items():
        if not runs:
            continue
        seconds = [run["seconds"] for run in runs]
        wrong = [run for run in runs if not run["success"]]
        rows.append(
            f"{set_name:<8} {method:<22} {len(runs):5d} {np.mean([r['success'] for r in runs]):8.0%}"
            f" {sum(not r['flagged'] for r in wrong):7d} {sum(r['flagged'] for r in wrong):8d}"
            f" {sum(r['flagged'] and r['success'] for r in runs):12d} {sum(r['second_chance'] for r in runs):7d}"
            f" {np.median(seconds):8.1f} s {p95(seconds):7.1f} s"
            f" {max(r['memory_gb'] for r in runs):6.2f} GB")
    return rows


SUMMARY_HEADER = ("set      method                 cases  success  silent  flagged  false alarms  retried"
                  "  median t    p95 t   peak mem")
