"""Batch benchmark: `ctmr-batch` throughput for 1 and 2 workers, Dask's overhead per case, memory per case.

A cohort of N cases is made from the bundled 2 mm pair (or, with --full-resolution, the full-resolution pair
of $CTMR_SHARED_DATA), the MR header moved by N known rigid poses (up to 20 degrees and 20 mm). The same
cohort is registered by `ctmr-batch` with each worker count (one thread per case): cases per minute, case
seconds, peak memory per case (the case's process tree), and the accuracy against pose @ reference (p95
over the CT object). The runs of different worker counts are compared case by case (p95 of the distance
between their transforms): the bound on "results do not depend on the number of workers". Dask's own cost
per case is measured with trivial tasks on a 2-worker LocalCluster, and the fixed cost of a case's child
process (start and imports) with a case whose input is missing.

    python bench/batch_benchmark.py [--cases 4] [--workers 1,2] [--trivial-tasks 200] [--full-resolution]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from capture_benchmark import data_dir, move_header
from scipy.spatial.transform import Rotation

from CTMRRegistrationLib.batch.case import CaseJob, run_case
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, p95_distance
from CTMRRegistrationLib.core.masks import ct_body_mask


def pair(full_resolution: bool) -> tuple[Path, Path, Path]:
    """CT, MR and reference CT->MR transform files."""
    if not full_resolution:
        return resources.sample_ct_path(), resources.sample_mr_path(), resources.sample_reference_transform_path()
    folder = data_dir()
    reference = folder / "reference_rigid_fixedCT_movingMR.tfm"
    return folder / "ct_fullres.nii.gz", folder / "mr_t2_fullres.nii.gz", reference


def poses(count: int, centre: np.ndarray) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    result = []
    for _ in range(count):
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_euler("xyz", rng.uniform(-20.0, 20.0, 3), degrees=True).as_matrix()
        pose[:3, 3] = centre - pose[:3, :3] @ centre + rng.uniform(-20.0, 20.0, 3)
        result.append(pose)
    return result


def make_cohort(folder: Path, count: int, full_resolution: bool) -> tuple[Path, dict[str, np.ndarray]]:
    ct, mr_path, _ = pair(full_resolution)
    mr = sitk.ReadImage(str(mr_path))
    centre = np.asarray(mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in mr.GetSize()]))
    cases = {}
    lines = ["case,fixed,moving"]
    for index, pose in enumerate(poses(count, centre)):
        case = f"case{index:02d}"
        sitk.WriteImage(move_header(mr, pose), str(folder / f"{case}.nii.gz"))
        cases[case] = pose
        lines.append(f"{case},{ct},{case}.nii.gz")
    manifest = folder / "cases.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, cases


def object_points(ct_path: Path) -> np.ndarray:
    ct = sitk.ReadImage(str(ct_path))
    mask = sitk.GetArrayFromImage(ct_body_mask(ct))
    voxels = np.argwhere(mask > 0)[:, ::-1].astype(float)
    voxels = voxels[np.random.default_rng(0).choice(len(voxels), 4000, replace=False)]
    return np.array([ct.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])


def run_batch(manifest: Path, output: Path, workers: int) -> tuple[float, list[dict]]:
    command = [sys.executable, "-m", "CTMRRegistrationLib", "batch", str(manifest), "--output-dir", str(output),
               "--workers", str(workers), "--threads-per-case", "1", "--dashboard-address", ":0"]
    start = time.monotonic()
    subprocess.run(command, check=False, capture_output=True)
    seconds = time.monotonic() - start
    with open(output / "summary.csv", newline="") as stream:
        return seconds, list(csv.DictReader(stream))


def transforms(output: Path, cases) -> dict[str, np.ndarray]:
    return {case: matrix_from_sitk(sitk.ReadTransform(str(output / case / "transform.h5")))
            for case in cases if (output / case / "transform.h5").is_file()}


def trivial(index: int) -> int:
    return index


def scheduler_overhead(tasks: int) -> tuple[float, float]:
    """Seconds per trivial task: all submitted at once (throughput), and one after the other (latency)."""
    from distributed import Client, LocalCluster, as_completed

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.submit(trivial, -1, pure=False).result()
        start = time.monotonic()
        for _ in as_completed([client.submit(trivial, i, retries=1, pure=False) for i in range(tasks)]):
            pass
        throughput = (time.monotonic() - start) / tasks
        start = time.monotonic()
        for i in range(tasks // 4):
            client.submit(trivial, i, retries=1, pure=False).result()
        latency = (time.monotonic() - start) / (tasks // 4)
    return throughput, latency


def child_start_seconds(folder: Path) -> float:
    """Seconds of a case whose input is missing: the child process's start, imports and refusal."""
    job = CaseJob(case="missing", directory=str(folder / "missing"),
                  arguments=("--fixed", str(folder / "nope.nii.gz"), "--moving", str(folder / "nope.nii.gz")),
                  threads=1, fingerprint="")
    return run_case(job)["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated")
    parser.add_argument("--trivial-tasks", type=int, default=200)
    parser.add_argument("--full-resolution", action="store_true", help="the full-resolution pair of shared data")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    ct, _, reference_path = pair(args.full_resolution)
    reference = matrix_from_sitk(sitk.ReadTransform(str(reference_path)))
    points = object_points(ct)
    print(f"# bench/batch_benchmark.py --cases {args.cases} --workers {args.workers}"
          f"{' --full-resolution' if args.full_resolution else ''}; {os.cpu_count()} cores, "
          f"load average before {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        manifest, cases = make_cohort(folder, args.cases, args.full_resolution)
        results = {}
        print("workers  wall s  cases/min  case s (mean)  peak MB (mean / max)  registered  p95 vs truth (max)")
        for workers in worker_counts:
            seconds, rows = run_batch(manifest, folder / f"out{workers}", workers)
            results[workers] = transforms(folder / f"out{workers}", cases)
            errors = [p95_distance(matrix, cases[case] @ reference, points)
                      for case, matrix in results[workers].items()]
            case_seconds = [float(row["seconds"]) for row in rows if row["seconds"]]
            memory = [int(row["peak_memory_mb"]) for row in rows if row["peak_memory_mb"]]
            print(f"{workers:7d}  {seconds:6.1f}  {60 * len(rows) / seconds:9.2f}  {np.mean(case_seconds):13.1f}  "
                  f"{np.mean(memory):10.0f} / {max(memory):<9d}  {len(results[workers])}/{len(rows):<8d}  "
                  f"{max(errors, default=float('nan')):.2f} mm")
        first, *others = worker_counts
        for workers in others:
            shared = results[first].keys() & results[workers].keys()
            spread = max((p95_distance(results[first][c], results[workers][c], points) for c in shared),
                         default=float("nan"))
            print(f"same cases, {first} vs {workers} workers: largest p95 difference {spread:.4f} mm "
                  f"over {len(shared)} cases")
        throughput, latency = scheduler_overhead(args.trivial_tasks)
        print(f"Dask overhead per case (trivial tasks, 2 workers): {1000 * throughput:.1f} ms submitted together, "
              f"{1000 * latency:.1f} ms one at a time")
        fixed_cost = child_start_seconds(folder)
        print(f"child process fixed cost per case (start, imports, a refused input): {fixed_cost:.1f} s")


if __name__ == "__main__":
    main()
