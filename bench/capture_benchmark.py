"""Capture benchmark: does registration find the right pose from any start, how fast, in how much memory?

The full-resolution porcine MR is moved by N random rigid poses (rotation uniform over SO(3), offset up
to 250 mm); each case is registered by `ctmr-register` with the CT fixed and with the MR fixed, and by
two peers with the CT fixed: elastix with generic rigid settings (geometric-centre start) and moments
initialisation + Mattes MI. A run succeeds when its p95 error over CT-object points against the
reference transform composed with the pose is below 5 mm, and it agrees with the other successful runs
of its method within 1 mm p95. Every run is a separate process: wall time and peak memory are its own.

    python bench/capture_benchmark.py [--cases 30] [--threads 2] [--peer-cases 30]

With `--sets human,cropped` (and `phantom` for the set above), the human-thigh and cropped-phantom sets of
`capture_sets.py` run instead, `--poses` random poses per field-of-view pattern, with our quality assessment:
they count silent failures (wrong, exit status 0) apart from flagged ones.

    python bench/capture_benchmark.py --sets human,cropped [--poses 6] [--no-peers]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from CTMRRegistrationLib.core.geometry import matrix_from_sitk, p95, p95_distance, transform_points
from CTMRRegistrationLib.core.imaging import shrink_to_spacing
from CTMRRegistrationLib.core.masks import ct_body_mask
from CTMRRegistrationLib.elastix.backends import find_elastix_executable
from CTMRRegistrationLib.elastix.parameters import read_parameter_file
from CTMRRegistrationLib.elastix.transforms import sitk_from_transform_map

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "CTMRRegistration" / "Testing" / "Python"))
from ground_truth import move_header  # noqa: E402  (the tests' known rigid moves; the other benchmarks take it here)

SUCCESS_P95_MM = 5.0
AGREEMENT_P95_MM = 1.0


def data_dir() -> Path:
    shared = os.environ.get("CTMR_SHARED_DATA")
    return Path(shared) if shared else HERE.parent.parent / "shared" / "data" / "mridir-porcine"


def random_poses(count: int, seed: int, centre: np.ndarray) -> list[np.ndarray]:
    """Rigid poses about `centre`: rotation uniform over SO(3), offset uniform in length up to 250 mm."""
    rng = np.random.default_rng(seed)
    poses = []
    for rotation in Rotation.random(count, random_state=seed).as_matrix():
        direction = rng.normal(size=3)
        offset = direction / np.linalg.norm(direction) * rng.uniform(0.0, 250.0)
        pose = np.eye(4)
        pose[:3, :3] = rotation
        pose[:3, 3] = centre - rotation @ centre + offset
        poses.append(pose)
    return poses



# Runs a command, writes its peak resident size (KiB) and CPU seconds to argv[1], exits with its status. A child forked
# straight from a benchmark that holds full-resolution images starts as a copy of it, and its peak would read
# as the benchmark's size (2.4 GB for every run, even a 4 s thigh registration); the launcher's own child does not.
_LAUNCHER = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:]); _, status, usage = "
             "os.wait4(child.pid, 0); open(sys.argv[1], 'w').write(f'{usage.ru_maxrss} "
             "{usage.ru_utime + usage.ru_stime}'); sys.exit(os.waitstatus_to_exitcode(status))")


def measured(command: list[str], stdout_path: Path | None = None) -> dict:
    """Run `command`: its wall seconds (with a Python launcher's start, ~0.05 s), CPU seconds (its own and its
    children's), peak resident memory in GB (the largest of its processes) and exit status."""
    with tempfile.TemporaryDirectory() as folder, open(stdout_path or os.devnull, "w") as stdout:
        usage = Path(folder) / "usage"
        started = time.perf_counter()
        status = subprocess.run([sys.executable, "-c", _LAUNCHER, str(usage), *map(str, command)], stdout=stdout,
                                stderr=subprocess.DEVNULL).returncode
        seconds = time.perf_counter() - started
        peak_kib, cpu = usage.read_text().split() if usage.exists() else ("nan", "nan")
        return {"wall": seconds, "cpu": float(cpu), "peak_gb": float(peak_kib) / 1024**2, "status": status}


def timed(command: list[str], stdout_path: Path | None = None) -> tuple[float, float, int]:
    """Run `command`; its wall seconds, its peak RSS in GB, and its exit status (see `measured`)."""
    run = measured(command, stdout_path)
    return run["wall"], run["peak_gb"], run["status"]


Run = tuple[np.ndarray | None, float, float]  # fixed->moving matrix (None on failure), seconds, peak GB


def moved_cases(mr: sitk.Image, count: int, seed: int, centre, work: Path):
    """(case, pose, file) per random pose: the MR with its header moved by the pose, written into `work`."""
    moved = work / "mr_moved.nii"
    for case, pose in enumerate(random_poses(count, seed, centre)):
        sitk.WriteImage(move_header(mr, pose), str(moved))
        yield case, pose, moved


def run_ours(fixed: Path, moving: Path, work: Path, threads: int) -> Run:
    output = work / "result.json"
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "CTMRRegistrationLib", "--fixed", str(fixed), "--moving", str(moving),
               "--output-transform", str(work / "ours.h5"), "--json", "--threads", str(threads),
               "--no-qa"]  # registration alone (qa_benchmark.py assesses the transforms itself)
    seconds, memory, status = timed(command, output)
    if status != 0 or not output.exists():
        return None, seconds, memory
    return np.asarray(json.loads(output.read_text())["transform"]), seconds, memory


def run_generic_rigid(fixed: Path, moving: Path, work: Path, threads: int) -> Run:
    executable = find_elastix_executable()
    out = work / "elastix"
    out.mkdir(exist_ok=True)
    result = out / "TransformParameters.0.txt"
    result.unlink(missing_ok=True)
    command = [str(executable.path), "-f", str(fixed), "-m", str(moving), "-p", str(HERE / "generic_rigid_peer.txt"),
               "-out", str(out), "-threads", str(threads)]
    seconds, memory, _ = timed(command)
    if not result.exists():
        return None, seconds, memory
    parameters = read_parameter_file(result, required=("Transform",))
    return matrix_from_sitk(sitk_from_transform_map(parameters)), seconds, memory


def run_moments_mi(fixed: Path, moving: Path, work: Path, threads: int) -> Run:
    output = work / "moments.tfm"
    output.unlink(missing_ok=True)
    command = [sys.executable, str(HERE / "moments_mi_peer.py"), str(fixed), str(moving), str(output), str(threads)]
    seconds, memory, _ = timed(command)
    if not output.exists():
        return None, seconds, memory
    return matrix_from_sitk(sitk.ReadTransform(str(output))), seconds, memory


def summarise(name: str, runs: list[dict], points: np.ndarray) -> dict:
    """Success (< 5 mm from the expected pose and within 1 mm of the other successful runs) and figures."""
    close = [run for run in runs if run["error_p95"] < SUCCESS_P95_MM]
    if close:
        normalised = [run["normalised"] for run in close]
        medoid = min(normalised, key=lambda m: np.median([p95_distance(m, other, points) for other in normalised]))
        for run in close:
            run["agreement_p95"] = p95_distance(run["normalised"], medoid, points)
    for run in runs:
        run["success"] = run["error_p95"] < SUCCESS_P95_MM and run.get("agreement_p95", np.inf) < AGREEMENT_P95_MM
    seconds = [run["seconds"] for run in runs]
    errors = [run["error_p95"] for run in runs if run["success"]]
    return {
        "method": name,
        "cases": len(runs),
        "success_rate": float(np.mean([run["success"] for run in runs])),
        "median_error_p95_mm": float(np.median(errors)) if errors else float("nan"),
        "p95_error_p95_mm": p95(errors) if errors else float("nan"),
        "max_agreement_p95_mm": max((run["agreement_p95"] for run in runs if run["success"]), default=float("nan")),
        "median_seconds": float(np.median(seconds)),
        "max_peak_memory_gb": float(max(run["memory_gb"] for run in runs)),
    }


def run_partial_sets(args, set_names: list[str]) -> None:
    """The human and cropped sets (see capture_sets.py): one line per run, then a summary per set and method."""
    sys.path.insert(0, str(HERE))
    import capture_sets

    rows, everything = [], {}
    with tempfile.TemporaryDirectory(prefix="ctmr-bench-") as work:
        for name in set_names:
            print(f"\n{name}: ground-truth / capture p95 error, time, outcome (ours CT fixed | ours MR fixed | peers)")
            methods = capture_sets.run_set(sys.modules[__name__], name, data_dir().parent, args.poses, args.seed,
                                           args.threads, Path(work), not args.no_peers)
            rows += capture_sets.summary_rows(name, methods)
            everything[name] = methods
    print("\n" + capture_sets.SUMMARY_HEADER + "\n" + "\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1, default=float))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--peer-cases", type=int, default=None, help="run the peers on the first K cases (default all)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--sets", default="phantom", help="comma-separated: phantom, human, cropped")
    parser.add_argument("--poses", type=int, default=6, help="poses per field-of-view pattern (human, cropped)")
    parser.add_argument("--no-peers", action="store_true", help="human, cropped: leave the peers out")
    args = parser.parse_args()
    partial_sets = [name for name in args.sets.split(",") if name != "phantom"]
    if partial_sets:
        run_partial_sets(args, partial_sets)
        if "phantom" not in args.sets.split(","):
            return
    peer_cases = args.cases if args.peer_cases is None else args.peer_cases

    folder = data_dir()
    ct_path, mr = folder / "ct_fullres.nii.gz", sitk.ReadImage(str(folder / "mr_t2_fullres.nii.gz"))
    reference = matrix_from_sitk(sitk.ReadTransform(str(folder / "reference_rigid_fixedCT_movingMR.tfm")))
    coarse_ct = shrink_to_spacing(sitk.ReadImage(str(ct_path), sitk.sitkFloat32), 2.0)
    voxels = np.argwhere(sitk.GetArrayFromImage(ct_body_mask(coarse_ct)) > 0)[:, ::-1].astype(float)
    voxels = voxels[np.random.default_rng(0).choice(len(voxels), 3000, replace=False)]
    points = np.array([coarse_ct.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])
    centre = np.asarray(mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in mr.GetSize()]))

    methods = {"ours CT fixed": [], "ours MR fixed": [], "elastix generic rigid": [], "moments + Mattes MI": []}
    print(f"{'case':>4} {'rotation':>8} {'offset':>7} | " + " | ".join(f"{m:^24}" for m in methods))
    with tempfile.TemporaryDirectory(prefix="ctmr-bench-") as work:
        work = Path(work)
        for case, pose, moved in moved_cases(mr, args.cases, args.seed, centre, work):
            expected = pose @ reference
            runs = {"ours CT fixed": run_ours(ct_path, moved, work, args.threads)}
            backward = run_ours(moved, ct_path, work, args.threads)
            runs["ours MR fixed"] = (None if backward[0] is None else np.linalg.inv(backward[0]), *backward[1:])
            if case < peer_cases:
                runs["elastix generic rigid"] = run_generic_rigid(ct_path, moved, work, args.threads)
                runs["moments + Mattes MI"] = run_moments_mi(ct_path, moved, work, args.threads)
            cells = []
            for name, (matrix, seconds, memory) in runs.items():
                error = np.inf if matrix is None else p95_distance(matrix, expected, points)
                normalised = None if matrix is None else np.linalg.inv(pose) @ matrix
                methods[name].append({"case": case, "error_p95": error, "seconds": seconds, "memory_gb": memory,
                                      "normalised": normalised})
                cells.append(f"{error:8.2f} mm {seconds:5.1f} s {memory:4.2f} GB")
            rotation = np.degrees(Rotation.from_matrix(pose[:3, :3]).magnitude())
            offset = np.linalg.norm(transform_points(pose, centre[None])[0] - centre)
            print(f"{case:4d} {rotation:7.1f}° {offset:5.0f}mm | " + " | ".join(cells), flush=True)

    summaries = [summarise(name, runs, points) for name, runs in methods.items() if runs]
    ours = np.median([run["seconds"] for name in ("ours CT fixed", "ours MR fixed") for run in methods[name]])
    print("\nmethod                  cases  success  median p95 err  p95 of p95 err  max agreement"
          "  median time  peak mem  our time / theirs")
    for s in summaries:
        print(f"{s['method']:<22} {s['cases']:6d} {s['success_rate']:7.0%} {s['median_error_p95_mm']:12.2f} mm"
              f" {s['p95_error_p95_mm']:13.2f} mm {s['max_agreement_p95_mm']:12.2f} mm {s['median_seconds']:10.1f} s"
              f" {s['max_peak_memory_gb']:7.2f} GB {ours / s['median_seconds']:10.2f}")
    if args.json:
        for runs in methods.values():
            for run in runs:
                run.pop("normalised")
        args.json.write_text(json.dumps({"summaries": summaries, "runs": methods}, indent=1, default=float))


if __name__ == "__main__":
    main()
