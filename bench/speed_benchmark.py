"""Speed benchmark: where a run's seconds and memory go, beside elastix's generic rigid preset, in one run.

On the full-resolution porcine pair (CT fixed, MR moving, as the files come): `ctmr-register` with the quality
check (the default), with it and the resampled MR written (`--output-volume`, what SlicerElastix hands its users),
`ctmr-register --no-qa`, and elastix with SlicerElastix's generic rigid preset (its settings in
bench/generic_rigid_peer.txt; geometric-centre start: it lands wrong on this pair, its time is the yardstick), as
SlicerElastix runs it (writing the registered volume: the baseline of the ratios) and writing the transform alone;
each a separate process, in turn, `--repeats` times; medians of wall time, CPU time (elastix's included), peak
resident memory (the largest process), and ratios to the baseline. Beside them, the median of each step of our
runs' profile (`stage_seconds`). Then the pose search alone (in this process, after a warm-up) on small and larger
images: the bundled 2 mm pair, a 96^3 pair, and the full-resolution pair on 2 mm and 1 mm working grids, with the
voxels it starts from and the candidates it scored. Targets: wall <= 0.5x elastix and peak <= 1 GB with the quality
check; the search <= 3 s on the bundled pair and on 96^3.

    python bench/speed_benchmark.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
from capture_benchmark import HERE, data_dir, measured

from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.imaging import shrink_to_spacing
from CTMRRegistrationLib.elastix.backends import find_elastix_executable
from CTMRRegistrationLib.elastix.parameters import read_parameter_file, write_parameter_file
from CTMRRegistrationLib.registration.initialization import search_initialization
from CTMRRegistrationLib.registration.pipeline import WORKING_SPACING_MM

OURS = {"ctmr-register (with QA)": [], "ctmr-register --output-volume": ["--output-volume", "resampled.nrrd"],
        "ctmr-register --no-qa": ["--no-qa"]}
TARGETS = {"wall ratio with QA": 0.5, "peak GB with QA": 1.0, "search s (small images)": 3.0}


BASELINE = "elastix generic rigid (as SlicerElastix)"


def ours(fixed: Path, moving: Path, work: Path, threads: int, options: list[str], code: Path | None = None) -> dict:
    """A `ctmr-register` run; `code`: the library of another checkout (its CTMRRegistration folder)."""
    report = work / "report.json"
    command = [sys.executable, "-m", "CTMRRegistrationLib", "--fixed", fixed, "--moving", moving,
               "--output-transform", work / "ours.h5", "--json", "--threads", str(threads)]
    if code is not None:
        command = ["env", f"PYTHONPATH={code}"] + command
    run = measured(command + options, report)
    result = json.loads(report.read_text()) if run["status"] == 0 else {}
    return run | {"stages": result.get("stage_seconds", {}), "verdict": result.get("verdict")}


def generic_rigid(fixed: Path, moving: Path, work: Path, threads: int, result_image: bool) -> dict:
    """elastix with the generic rigid settings; `result_image`: writing the registered volume as the preset
    SlicerElastix ships does (WriteResultImage "true", MetaImage)."""
    out = work / "elastix"
    out.mkdir(exist_ok=True)
    parameters = read_parameter_file(HERE / "generic_rigid_peer.txt")
    if result_image:
        parameters |= {"WriteResultImage": ["true"], "ResultImageFormat": ["mhd"]}
    preset = write_parameter_file(parameters, work / "generic_rigid.txt")
    command = [find_elastix_executable().path, "-f", fixed, "-m", moving, "-p", preset, "-out", out,
               "-threads", str(threads)]
    return measured(command) | {"stages": {}}


def subprocess_output(command: list) -> str:
    return subprocess.run(list(map(str, command)), capture_output=True, text=True).stdout.strip()


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def print_runs(methods: dict[str, list[dict]]) -> None:
    base = {key: median(methods[BASELINE], key) for key in ("wall", "cpu")}
    print(f"{'method':32} {'wall s':>7} {'CPU s':>7} {'peak GB':>8} {'wall/elastix':>13} {'CPU/elastix':>12}")
    for name, runs in methods.items():
        wall, cpu, peak = (median(runs, key) for key in ("wall", "cpu", "peak_gb"))
        print(f"{name:32} {wall:7.1f} {cpu:7.1f} {peak:8.2f} {wall / base['wall']:13.2f} {cpu / base['cpu']:12.2f}")
    print("\nprofile of ctmr-register (median seconds per step)")
    for name in (name for name in methods if name.startswith("ctmr-register")):
        steps = {step: statistics.median(run["stages"].get(step, 0.0) for run in methods[name])
                 for step in methods[name][0]["stages"]}
        print(f"  {name}: " + "  ".join(f"{step} {seconds:.2f}" for step, seconds in steps.items()))
    with_qa = methods["ctmr-register (with QA)"]
    ratio = median(with_qa, "wall") / base["wall"]
    print(f"\nwith QA: wall {ratio:.2f}x elastix (target <= {TARGETS['wall ratio with QA']}), peak "
          f"{median(with_qa, 'peak_gb'):.2f} GB (target <= {TARGETS['peak GB with QA']}); verdicts "
          f"{[run['verdict'] for run in with_qa]}")


def working(image: sitk.Image, spacing: float) -> sitk.Image:
    """The pipeline's working image: whole voxel blocks averaged to about `spacing`, float."""
    return sitk.Cast(shrink_to_spacing(image, spacing), sitk.sitkFloat32)


def cube(image: sitk.Image, size: int) -> sitk.Image:
    """`image` resampled on a `size`^3 grid over the same box."""
    spacing = [n * s / size for n, s in zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(image, [size] * 3, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                         image.GetDirection(), float(sitk.GetArrayViewFromImage(image).min()), sitk.sitkFloat32)


def time_search(name: str, fixed: sitk.Image, moving: sitk.Image, threads: int) -> float:
    started = time.perf_counter()
    result = search_initialization(fixed, moving, "CT", "MR", threads=threads)
    seconds = time.perf_counter() - started
    voxels = [fixed.GetNumberOfPixels(), moving.GetNumberOfPixels()]
    print(f"  {name:38} {voxels[0]:>9} + {voxels[1]:>9} voxels  {seconds:6.2f} s  "
          f"{result.details['candidates']} candidates scored")
    return seconds


def print_search(threads: int) -> None:
    print("\npose search alone (initialization step), CT fixed")
    ct, mr = sitk.ReadImage(str(resources.sample_ct_path())), sitk.ReadImage(str(resources.sample_mr_path()))
    full_ct = sitk.ReadImage(str(data_dir() / "ct_fullres.nii.gz"))
    full_mr = sitk.ReadImage(str(data_dir() / "mr_t2_fullres.nii.gz"))
    small = working(ct, WORKING_SPACING_MM), working(mr, WORKING_SPACING_MM)
    search_initialization(*small, "CT", "MR", threads=threads)  # warm-up: imports, FFT plans
    seconds = {"bundled 2 mm pair": time_search("bundled 2 mm pair", *small, threads),
               "96^3 pair": time_search("96^3 pair", cube(ct, 96), cube(mr, 96), threads)}
    for spacing in (WORKING_SPACING_MM, 1.0):
        time_search(f"full-resolution pair on a {spacing:g} mm grid", working(full_ct, spacing),
                    working(full_mr, spacing), threads)
    worst = max(seconds.values())
    print(f"search on small images: worst {worst:.2f} s (target <= {TARGETS['search s (small images)']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--before", type=Path, help="a checkout of an earlier commit: its ctmr-register runs in turn "
                        "with ours (`git worktree add /tmp/before COMMIT`)")
    args = parser.parse_args()
    fixed, moving = data_dir() / "ct_fullres.nii.gz", data_dir() / "mr_t2_fullres.nii.gz"
    print(f"# python bench/speed_benchmark.py --repeats {args.repeats} --threads {args.threads}"
          + (f" --before {args.before} ({subprocess_output(['git', '-C', args.before, 'log', '-1', '--format=%h'])})"
             if args.before else ""))
    print(f"full-resolution pair, CT {sitk.ReadImage(str(fixed)).GetSize()} fixed, MR moving, "
          f"{args.threads} threads, {args.repeats} runs each in turn (medians)")
    before = {f"{name}, before": options for name, options in OURS.items() if args.before and "QA" in name}
    methods: dict[str, list[dict]] = {name: [] for name in (*OURS, *before, BASELINE,
                                                            "elastix generic rigid, transform only")}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for _ in range(args.repeats):
            for name, options in OURS.items():
                methods[name].append(ours(fixed, moving, work, args.threads,
                                          [str(work / o) if o.endswith(".nrrd") else o for o in options]))
            for name, options in before.items():
                methods[name].append(ours(fixed, moving, work, args.threads, options,
                                          args.before / "CTMRRegistration"))
            methods[BASELINE].append(generic_rigid(fixed, moving, work, args.threads, result_image=True))
            methods["elastix generic rigid, transform only"].append(
                generic_rigid(fixed, moving, work, args.threads, result_image=False))
    print_runs(methods)
    print_search(args.threads)


if __name__ == "__main__":
    main()
