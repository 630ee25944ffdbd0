"""Accuracy benchmark: each elastix stage against ground truth, with its time and peak memory, beside plain
elastix with generic CT/MR settings on the same inputs.

Ground truth (see CTMRRegistration/Testing/Python/ground_truth.py and bench/porcine_landmarks.py):
- phantom landmarks: air-pocket pairs located independently in the porcine CT and MR (Testing/Data);
- synthetic warps: the MR (phantom and thigh) resampled through a known warp (phantom-like anisotropic
  scaling plus a random 4 mm B-spline); error = |W(R_warped(x)) - R_original(x)| over the fixed object (on the
  thighs, the part of it inside the MR's view: outside it a partial MR constrains nothing);
- thigh tumour masks (sts-thigh, aligned by the dataset's makers): Dice and HD95 of the CT mask and the MR
  mask brought onto the CT grid by the result.
Every MR starts from a header moved 3-5 degrees / 5-8 mm away from its reference, and every run uses
`--init none`, so ours and plain elastix (which has no orientation search) start from the same pose.
Rows: our stages forced on (each stage's own effect), our default guarded pipeline, and plain elastix
(generic rigid -> affine -> B-spline 20 mm, bench/generic_rigid_peer.txt settings, no masks).

    CTMR_SHARED_DATA=../shared/data python bench/accuracy_benchmark.py [--threads 2] [--full-resolution]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from capture_benchmark import HERE, timed
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(HERE.parent / "CTMRRegistration" / "Testing" / "Python"))
from ground_truth import error_summary, mapped, move_header, synthetic_warp  # noqa: E402
from porcine_landmarks import CENTRAL_MR_Z_MM, landmark_floors  # noqa: E402

from CTMRRegistrationLib.core import resources  # noqa: E402
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, transform_points  # noqa: E402
from CTMRRegistrationLib.core.masks import foreground_mask  # noqa: E402
from CTMRRegistrationLib.elastix.backends import find_elastix_executable  # noqa: E402
from CTMRRegistrationLib.elastix.parameters import read_parameter_file, write_parameter_file  # noqa: E402
from CTMRRegistrationLib.qa.segmentation_metrics import overlap_metrics  # noqa: E402

LANDMARKS = HERE.parent / "CTMRRegistration" / "Testing" / "Data" / "porcine_air_pockets.json"
OURS = {  # row -> (stages, force)
    "ours rigid": ("rigid", True),
    "ours rigid+affine (forced)": ("rigid,affine", True),
    "ours rigid+affine+deformable (forced)": ("rigid,affine,deformable", True),
    "ours rigid,affine,deformable (guarded)": ("rigid,affine,deformable", False),
}
PLAIN = ("plain elastix rigid", "plain elastix +affine", "plain elastix +bspline")
WARP_SEEDS = (1, 2)


def start_pose(degrees, millimetres, centre) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix()
    pose[:3, 3] = centre - pose[:3, :3] @ centre + np.asarray(millimetres, dtype=float)
    return pose


def object_centre(image: sitk.Image, modality: str) -> np.ndarray:
    voxels = np.argwhere(sitk.GetArrayFromImage(foreground_mask(image, modality)) > 0)[:, ::-1].mean(axis=0)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(voxels.tolist()))


def object_points(image: sitk.Image, modality: str, count: int = 2000) -> np.ndarray:
    voxels = np.argwhere(sitk.GetArrayFromImage(foreground_mask(image, modality)) > 0)[:, ::-1].astype(float)
    voxels = voxels[np.random.default_rng(0).choice(len(voxels), min(count, len(voxels)), replace=False)]
    return np.array([image.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])


def in_view(points: np.ndarray, image: sitk.Image) -> np.ndarray:
    """The `points` (LPS) that lie inside `image`'s field of view."""
    index = np.array([image.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points])
    return points[np.all((index >= 0) & (index <= np.array(image.GetSize()) - 1), axis=1)]


class Runner:
    """Runs our CLI and plain elastix on files in `work`; every run keeps its transform (as a point mapper),
    time and peak memory."""

    def __init__(self, work: Path, threads: int):
        self.work, self.threads = work, threads
        self.elastix = find_elastix_executable().path
        self.transformix = self.elastix.with_name("transformix" + self.elastix.suffix)

    def ours(self, fixed: Path, moving: Path, stages: str, force: bool, tag: str) -> dict:
        output, report = self.work / f"{tag}.h5", self.work / f"{tag}.json"
        command = [sys.executable, "-m", "CTMRRegistrationLib", "--fixed", str(fixed), "--moving", str(moving),
                   "--initialization", "none", "--stages", stages, "--threads", str(self.threads), "--no-qa", "--json",
                   "--output-transform", str(output)] + (["--force-stages"] if force else [])
        seconds, memory, status = timed(command, report)
        if status != 0:
            return {"seconds": seconds, "memory": memory, "map": None, "stage_seconds": {}, "guard": {}}
        result = json.loads(report.read_text())
        transform = sitk.ReadTransform(str(output))
        return {"seconds": seconds, "memory": memory, "map": lambda points: mapped(transform, points),
                "resample": lambda image, grid: sitk.Resample(image, grid, transform, sitk.sitkNearestNeighbor, 0),
                "stage_seconds": result["stage_seconds"], "guard": result["metrics"].get("stage_guard", {})}

    def plain(self, fixed: Path, moving: Path, tag: str) -> list[dict]:
        """Generic rigid, affine and 20 mm B-spline elastix runs chained in one call; one row per level."""
        generic = read_parameter_file(HERE / "generic_rigid_peer.txt") | {"AutomaticTransformInitialization": ["false"]}
        files = [write_parameter_file(generic, self.work / "plain_rigid.txt"),
                 write_parameter_file(generic | {"Transform": ["AffineTransform"]}, self.work / "plain_affine.txt"),
                 write_parameter_file(generic | {"Transform": ["BSplineTransform"],
                                                 "FinalGridSpacingInPhysicalUnits": ["20"],
                                                 "AutomaticScalesEstimation": ["false"]},
                                      self.work / "plain_bspline.txt")]
        out = self.work / f"plain_{tag}"
        out.mkdir(exist_ok=True)
        command = [str(self.elastix), "-f", str(fixed), "-m", str(moving), "-out", str(out),
                   "-threads", str(self.threads)] + [a for f in files for a in ("-p", str(f))]
        seconds, memory, status = timed(command)
        rows = []
        for level in range(3):
            parameters = out / f"TransformParameters.{level}.txt"
            ok = status == 0 and parameters.exists()
            rows.append({"seconds": seconds, "memory": memory, "stage_seconds": {},
                         "map": (lambda points, p=parameters: self._transformix_points(p, points)) if ok else None,
                         "resample": (lambda image, grid, p=parameters: self._transformix_labels(p, image))
                         if ok else None})
        return rows

    def _transformix_points(self, parameters: Path, points: np.ndarray) -> np.ndarray:
        folder = Path(tempfile.mkdtemp(dir=self.work))
        (folder / "points.txt").write_text("point\n" + f"{len(points)}\n"
                                           + "\n".join(" ".join(f"{c:.4f}" for c in p) for p in points))
        subprocess.run([str(self.transformix), "-def", str(folder / "points.txt"), "-tp", str(parameters),
                        "-out", str(folder)], check=True, capture_output=True)
        text = (folder / "outputpoints.txt").read_text()
        return np.array([[float(v) for v in m.split()] for m in re.findall(r"OutputPoint = \[ ([^\]]+)\]", text)])

    def _transformix_labels(self, parameters: Path, image: sitk.Image) -> sitk.Image:
        folder = Path(tempfile.mkdtemp(dir=self.work))
        nearest = read_parameter_file(parameters, required=("Transform",)) | {
            "FinalBSplineInterpolationOrder": ["0"], "ResultImagePixelType": ["unsigned char"],
            "ResultImageFormat": ["nii"]}
        write_parameter_file(nearest, folder / "tp.txt")
        sitk.WriteImage(image, str(folder / "labels.nii"))
        subprocess.run([str(self.transformix), "-in", str(folder / "labels.nii"), "-tp", str(folder / "tp.txt"),
                        "-out", str(folder)], check=True, capture_output=True)
        return sitk.ReadImage(str(folder / "result.nii"))

    def all_rows(self, fixed: Path, moving: Path, tag: str) -> dict:
        rows = {name: self.ours(fixed, moving, stages, force, f"{tag}-{i}")
                for i, (name, (stages, force)) in enumerate(OURS.items())}
        print(f"done: {tag} (ours)", file=sys.stderr, flush=True)
        rows |= dict(zip(PLAIN, self.plain(fixed, moving, tag)))
        print(f"done: {tag} (plain elastix)", file=sys.stderr, flush=True)
        return rows


def _write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def landmark_rows(rows: dict, ct_points: np.ndarray, mr_points: np.ndarray) -> dict:
    """Each row's TRE on the pairs, after the floors those pairs set (porcine_landmarks.landmark_floors)."""
    floors = {f"floor: {kind} fit, leave one out": error_summary(errors)
              for kind, errors in landmark_floors(ct_points, mr_points).items()}
    return floors | {name: error_summary(np.linalg.norm(run["map"](ct_points) - mr_points, axis=1))
                     if run["map"] else None for name, run in rows.items()}


def warp_rows(original: dict, warped: dict, warp_back, points: np.ndarray) -> dict:
    """|W(R_warped(x)) - R_original(x)| per row; `warp_back` maps warped-frame points to original-frame ones."""
    return {name: error_summary(np.linalg.norm(warp_back(warped[name]["map"](points)) - original[name]["map"](points),
                                               axis=1))
            if original[name]["map"] and warped[name]["map"] else None for name in original}


def mask_rows(rows: dict, ct: sitk.Image, ct_mask: sitk.Image, mr_mask: sitk.Image) -> dict:
    return {name: overlap_metrics(ct_mask, run["resample"](mr_mask, ct) if run["map"] else ct_mask * 0)
            for name, run in rows.items()}


def phantom(runner: Runner, work: Path, full_resolution: bool) -> dict:
    data = Path(os.environ.get("CTMR_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / "mridir-porcine"
    ct_path = data / "ct_fullres.nii.gz" if full_resolution else resources.sample_ct_path()
    mr = sitk.ReadImage(str(data / "mr_t2_fullres.nii.gz" if full_resolution else resources.sample_mr_path()))
    reference = matrix_from_sitk(sitk.ReadTransform(str(resources.sample_reference_transform_path())))
    ct = sitk.ReadImage(str(ct_path))
    # the MR header is moved so that identity (CT -> moved MR) lies 5 degrees / 8 mm from the reference
    pose = start_pose([3.0, -2.5, 3.0], [5.0, -4.0, 4.8], object_centre(ct, "CT"))
    header = pose @ np.linalg.inv(reference)
    moving = _write(move_header(mr, header), work / "phantom_mr.nii")
    rows = runner.all_rows(Path(ct_path), moving, "phantom")
    landmarks = json.loads(LANDMARKS.read_text())
    ct_points, mr_original = np.array(landmarks["ct_points_lps"]), np.array(landmarks["mr_points_lps"])
    mr_points = transform_points(header, mr_original)
    central = (mr_original[:, 2] >= CENTRAL_MR_Z_MM[0]) & (mr_original[:, 2] <= CENTRAL_MR_Z_MM[1])
    results = {"phantom landmarks (TRE mm)": landmark_rows(rows, ct_points, mr_points),
               "phantom landmarks, central MR slab (TRE mm)": landmark_rows(rows, ct_points[central],
                                                                           mr_points[central])}
    points = object_points(ct, "CT")
    for seed in WARP_SEEDS:
        warp = synthetic_warp(mr, "MR", seed)
        warped = runner.all_rows(Path(ct_path), _write(move_header(warp.deformed, header), work / "warped.nii"),
                                 f"phantom-warp{seed}")
        back = lambda p, w=warp: transform_points(header, w.map_back(transform_points(np.linalg.inv(header), p)))  # noqa: E731
        results[f"phantom synthetic warp {seed} (mm)"] = warp_rows(rows, warped, back, points)
    return results, rows


def thigh(runner: Runner, work: Path, patient: str) -> dict:
    data = Path(os.environ.get("CTMR_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / "sts-thigh" / patient
    ct_path = data / "CT" / "nifti" / "image" / "image.nii.gz"
    ct = sitk.ReadImage(str(ct_path))
    mr = sitk.ReadImage(str(data / "MR_T1" / "nifti" / "image" / "image.nii.gz"))
    ct_mask = sitk.ReadImage(str(data / "CT" / "nifti" / "mask" / "mask.nii.gz")) > 0
    mr_mask = sitk.Cast(sitk.ReadImage(str(data / "MR_T1" / "nifti" / "mask" / "mask.nii.gz")) > 0, sitk.sitkUInt8)
    header = start_pose([2.0, -3.0, 2.5], [4.0, -3.0, 3.0], object_centre(mr, "MR"))
    moving = _write(move_header(mr, header), work / f"{patient}_mr.nii")
    rows = runner.all_rows(ct_path, moving, patient)
    before = overlap_metrics(ct_mask, sitk.Resample(mr_mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    results = {f"{patient} tumour masks": {"makers' alignment": before}
               | mask_rows(rows, ct, ct_mask, move_header(mr_mask, header))}
    warp = synthetic_warp(mr, "MR", 1)
    warped = runner.all_rows(ct_path, _write(move_header(warp.deformed, header), work / "warped.nii"),
                             f"{patient}-warp")
    inverse = np.linalg.inv(header)
    back = lambda p: transform_points(header, warp.map_back(transform_points(inverse, p)))  # noqa: E731
    points = in_view(object_points(ct, "CT"), mr)  # at the makers' alignment (identity)
    results[f"{patient} synthetic warp (mm, CT object in the MR's view)"] = warp_rows(rows, warped, back, points)
    return results, rows


def _print_table(title: str, table: dict) -> None:
    print(f"\n{title}")
    for name, values in table.items():
        if values is None:
            print(f"  {name:42s} failed")
        elif "dice" in values:
            hd95 = values["hd95_mm"] if values["hd95_mm"] is not None else float("nan")
            print(f"  {name:42s} Dice {values['dice']:.3f}  HD95 {hd95:6.2f} mm")
        else:
            print(f"  {name:42s} mean {values['mean']:5.2f}  median {values['median']:5.2f}  p95 {values['p95']:5.2f}"
                  f"  max {values['max']:5.2f}")


def _print_costs(title: str, rows: dict) -> None:
    print(f"\n{title}: time and memory")
    for name, run in rows.items():
        stages = "  ".join(f"{k} {v:.1f}" for k, v in run["stage_seconds"].items() if k in ("rigid", "affine",
                                                                                          "deformable"))
        guard = "  ".join(f"{k}: not run, {v['shared_object_fraction']:.0%} shared" if not v.get("run", True) else
                          f"{k}: {v['edge_alignment_before']:.3f}->{v['edge_alignment_after']:.3f}"
                          f"{'' if v['kept'] else ' discarded'}" for k, v in run.get("guard", {}).items())
        print(f"  {name:42s} wall {run['seconds']:6.1f} s  peak {run['memory']:5.2f} GB  {stages}  {guard}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-resolution", action="store_true", help="the full-resolution phantom pair "
                        "(default: the bundled 2 mm pair)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctmr-accuracy-bench-") as work:
        work = Path(work)
        runner = Runner(work, args.threads)
        tables, costs = phantom(runner, work, args.full_resolution)
        all_costs = {"phantom": costs}
        for patient in ("STS_002", "STS_003"):
            patient_tables, all_costs[patient] = thigh(runner, work, patient)
            tables |= patient_tables
    print(f"accuracy per stage, {args.threads} threads; phantom pair: "
          f"{'full resolution' if args.full_resolution else 'bundled 2 mm'}")
    for title, table in tables.items():
        _print_table(title, table)
    for title, rows in all_costs.items():
        _print_costs(title, rows)


if __name__ == "__main__":
    main()
