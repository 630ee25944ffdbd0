"""Engine benchmark: time and peak memory of each elastix stage on the full-resolution pair, both backends.

The full-resolution MR header is moved so that the headers start 5 degrees / 8 mm from the reference
rigid solution ("pre-aligned inputs"). `ctmr-register --init none` then runs rigid, rigid + affine, and rigid +
affine + deformable, with the elastix executable and with the itk-elastix wheel; beside it, elastix with the
generic rigid settings of SlicerElastix (bench/generic_rigid_peer.txt, no automatic initialisation) runs on
the same files. Every run is a separate process: wall time and peak memory are its own; stage times come
from the pipeline's own clock. Accuracy beside them: p95 distance over the CT object from the reference (a
rigid Mattes-MI optimum, not the truth) and the mean TRE at the 84 air-pocket pairs located independently in
CT and MR (Testing/Data/porcine_air_pockets.json). Targets (2 cores): rigid stage <= 10 s, deformable <= 60 s.

    python bench/engine_benchmark.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from capture_benchmark import HERE, data_dir, move_header, timed
from scipy.spatial.transform import Rotation

from CTMRRegistrationLib.core.geometry import matrix_from_sitk, p95_distance, transform_points
from CTMRRegistrationLib.core.masks import ct_body_mask
from CTMRRegistrationLib.elastix.backends import find_elastix_executable
from CTMRRegistrationLib.elastix.parameters import read_parameter_file, write_parameter_file
from CTMRRegistrationLib.elastix.transforms import sitk_from_transform_map

TARGET_SECONDS = {"rigid": 10.0, "deformable": 60.0}
STAGE_SETS = ("rigid", "rigid,affine", "rigid,affine,deformable")
AIR_POCKETS = HERE.parent / "CTMRRegistration" / "Testing" / "Data" / "porcine_air_pockets.json"
OBJECT_CENTRE = np.array([-15.6, 5.5, -8.9])  # LPS centroid of the CT object mask, mm


def prealigned_mr(mr: sitk.Image, reference: np.ndarray, centre: np.ndarray) -> tuple[sitk.Image, np.ndarray]:
    """The MR with its header moved so that identity is `perturbation` away from the reference; returns the
    image and the reference in the moved frame."""
    perturbation = np.eye(4)
    perturbation[:3, :3] = Rotation.from_euler("xyz", [3.0, -2.5, 3.0], degrees=True).as_matrix()
    perturbation[:3, 3] = centre - perturbation[:3, :3] @ centre + np.array([5.0, -4.0, 4.8])
    pose = perturbation @ np.linalg.inv(reference)
    return move_header(mr, pose), pose @ reference


def object_points(ct: sitk.Image) -> np.ndarray:
    mask = sitk.GetArrayFromImage(ct_body_mask(ct))  # a copy: a view would outlive its temporary image
    voxels = np.argwhere(mask > 0)[::97, ::-1].astype(float)
    return np.array([ct.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])


def run_ours(fixed: Path, moving: Path, work: Path, stages: str, backend: str, threads: int) -> dict:
    transform = work / f"{stages}-{backend}.h5".replace(",", "+")
    report = work / "report.json"
    command = [sys.executable, "-m", "CTMRRegistrationLib", "--fixed", str(fixed), "--moving", str(moving),
               "--initialization", "none", "--stages", stages, "--backend", backend, "--threads", str(threads),
               "--output-transform", str(transform), "--json"]
    seconds, memory, status = timed(command, report)
    result = json.loads(report.read_text()) if status == 0 else {"stage_seconds": {}}
    return {"seconds": seconds, "memory": memory, "stages": result["stage_seconds"],
            "transform": sitk.ReadTransform(str(transform)) if status == 0 else None}


def run_generic_rigid(fixed: Path, moving: Path, work: Path, threads: int) -> dict:
    parameters = read_parameter_file(HERE / "generic_rigid_peer.txt") | {"AutomaticTransformInitialization": ["false"]}
    preset = write_parameter_file(parameters, work / "generic_rigid_prealigned.txt")
    out = work / "generic"
    out.mkdir(exist_ok=True)
    command = [str(find_elastix_executable().path), "-f", str(fixed), "-m", str(moving), "-p", str(preset),
               "-out", str(out), "-threads", str(threads)]
    seconds, memory, _ = timed(command)
    result = out / "TransformParameters.0.txt"
    transform = None
    if result.exists():
        transform = sitk_from_transform_map(read_parameter_file(result, required=("Transform",)))
    return {"seconds": seconds, "memory": memory, "stages": {"rigid": seconds}, "transform": transform}


def p95_mm(transform: sitk.Transform | None, expected: np.ndarray, points: np.ndarray) -> float:
    return float("nan") if transform is None else p95_distance(transform, expected, points)


def air_pocket_tre(transform: sitk.Transform | None, header: np.ndarray) -> float:
    """Mean distance (mm) between the CT air pockets mapped by `transform` and their MR partners, whose image
    had its header moved by `header`."""
    if transform is None:
        return float("nan")
    pairs = json.loads(AIR_POCKETS.read_text())
    mapped = np.array([transform.TransformPoint(p) for p in pairs["ct_points_lps"]])
    return float(np.linalg.norm(mapped - transform_points(header, np.array(pairs["mr_points_lps"])), axis=1).mean())


def agreement_mm(first: sitk.Transform | None, second: sitk.Transform | None, points: np.ndarray) -> float:
    return float("nan") if first is None or second is None else p95_distance(first, second, points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    data = data_dir()
    fixed = data / "ct_fullres.nii.gz"
    reference = matrix_from_sitk(sitk.ReadTransform(str(data / "reference_rigid_fixedCT_movingMR.tfm")))
    with tempfile.TemporaryDirectory(prefix="ctmr-engine-bench-") as work:
        work = Path(work)
        # the CT (and its mask) is read only after the runs: Linux children inherit the parent's peak RSS
        mr, expected = prealigned_mr(sitk.ReadImage(str(data / "mr_t2_fullres.nii.gz")), reference, OBJECT_CENTRE)
        moving = work / "mr_prealigned.nii.gz"
        sitk.WriteImage(mr, str(moving))
        del mr
        runs = {("generic rigid (SlicerElastix settings)", "elastix"): run_generic_rigid(fixed, moving, work,
                                                                                          args.threads)}
        for stages in STAGE_SETS:
            for backend in ("elastix", "itk-elastix"):
                runs[(f"ours {stages}", backend)] = run_ours(fixed, moving, work, stages, backend, args.threads)
                print(f"done: ours {stages} on {backend}", file=sys.stderr, flush=True)
    ct = sitk.ReadImage(str(fixed))
    points = object_points(ct)

    print(f"full-resolution CT {ct.GetSize()} fixed, MR moving, start 5 deg / 8 mm from the "
          f"reference, {args.threads} threads")
    header = expected @ np.linalg.inv(reference)
    print(f"{'method':40s} {'backend':12s} {'rigid s':>8s} {'affine s':>9s} {'deform s':>9s} {'wall s':>7s} "
          f"{'peak GB':>8s} {'p95 vs ref':>11s} {'air-pocket TRE':>15s}")
    for (method, backend), run in runs.items():
        stage = run["stages"]
        print(f"{method:40s} {backend:12s} {stage.get('rigid', float('nan')):8.1f} "
              f"{stage.get('affine', float('nan')):9.1f} {stage.get('deformable', float('nan')):9.1f} "
              f"{run['seconds']:7.1f} {run['memory']:8.2f} {p95_mm(run['transform'], expected, points):8.2f} mm"
              f" {air_pocket_tre(run['transform'], header):12.2f} mm")
    print()
    for stages in STAGE_SETS:
        both = [runs[(f"ours {stages}", backend)]["transform"] for backend in ("elastix", "itk-elastix")]
        print(f"backends agree ({stages}): p95 {agreement_mm(*both, points):.3f} mm over the CT object (target 0.5)")
    for stage, target in TARGET_SECONDS.items():
        for backend in ("elastix", "itk-elastix"):
            measured = runs[("ours rigid,affine,deformable", backend)]["stages"].get(stage, float("nan"))
            print(f"{stage} stage on {backend}: {measured:.1f} s, target {target:.0f} s: "
                  f"{'met' if measured <= target else 'missed'} (ratio {measured / target:.2f})")
    generic = runs[("generic rigid (SlicerElastix settings)", "elastix")]["seconds"]
    ours = runs[("ours rigid", "elastix")]["stages"].get("rigid", float("nan"))
    print(f"our rigid stage / generic rigid elastix run: {ours:.1f} s / {generic:.1f} s = {ours / generic:.2f}")


if __name__ == "__main__":
    main()
