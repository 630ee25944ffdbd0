"""Fault probe: run `ctmr-register`, `ctmr-qa` and `ctmr-batch` on the catalogue of hostile-but-fair inputs and
print one row per probe: exit code (and the one expected), whether any output or partial file was left,
whether the inputs are unchanged, and the first line of the error or warning. The next probe run starts
from this table.

Most probes fail before any registration (seconds each); --slow adds those that register the bundled 2 mm
pair: a full device after the registration, SIGTERM and SIGINT while elastix runs, a fixed CT stored as
floats in [0, 1], and a normal run as the baseline.

The cohort catalogue (`cohort:` rows) probes `ctmr-batch` the same way: refusals before any work, and with
--slow a LocalCluster run of two cases (baseline, a case over its time limit, and SIGINT, SIGTERM, SIGHUP while
a case runs), each checked for records that agree with the summary, no lock and no process left.

    PYTHONPATH=CTMRRegistration python bench/fault_probe.py [--slow]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.elastix.parameters import format_parameter_map, read_parameter_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CTMRRegistration" / "Testing" / "Python"))
from cli_signals import signal_at_step  # noqa: E402

CT, MR = resources.sample_ct_path(), resources.sample_mr_path()
FAST = ["--initialization", "none", "--bias-correction", "off", "--no-qa", "--threads", "1"]
LIBRARY = str(Path(__file__).resolve().parents[1] / "CTMRRegistration")


def _image(kind: str, folder: Path) -> Path:
    """A damaged or unusual copy of the bundled CT."""
    ct = sitk.ReadImage(str(CT))
    if kind in ("truncated", "corrupt"):
        data = bytearray(CT.read_bytes())
        data = data[: int(len(data) * 0.9)] if kind == "truncated" else data
        if kind == "corrupt":
            data[len(data) // 2] ^= 0xFF
        (folder / f"{kind}.nii.gz").write_bytes(bytes(data))
        return folder / f"{kind}.nii.gz"
    floats = sitk.Cast(ct, sitk.sitkFloat32)
    direction = np.asarray(ct.GetDirection()).reshape(3, 3)
    sheared = direction.copy()
    sheared[:, 1] = direction[:, 1] + 0.3 * direction[:, 0]
    sheared[:, 1] /= np.linalg.norm(sheared[:, 1])
    images = {
        "nan.nii.gz": lambda: _set(floats, float("nan")), "inf.mha": lambda: _set(floats, float("inf")),
        "4d.nii.gz": lambda: sitk.JoinSeries([ct, ct]),
        "rgb.nrrd": lambda: sitk.Compose([sitk.Cast(ct[:, :, 50:80], sitk.sitkUInt8)] * 3),
        "3slices.nii.gz": lambda: ct[:, :, 60:63], "coarse.nii.gz": lambda: _header(ct, spacing=[100.0] * 3),
        "sheared.nrrd": lambda: _header(ct, direction=sheared.ravel().tolist()),
        "unit.nrrd": lambda: sitk.RescaleIntensity(floats, 0.0, 1.0),
    }
    name = next(name for name in images if name.startswith(kind))
    sitk.WriteImage(images[name](), str(folder / name))
    return folder / name


def _set(image: sitk.Image, value: float) -> sitk.Image:
    image = sitk.Image(image)
    image[50, 50, 60] = value
    return image


def _header(image: sitk.Image, **changes) -> sitk.Image:
    image = sitk.Image(image)
    if "spacing" in changes:
        image.SetSpacing(changes["spacing"])
    if "direction" in changes:
        image.SetDirection(changes["direction"])
    return image


def _preset(folder: Path, name: str, **changes) -> Path:
    parameters = read_parameter_file(resources.parameter_file("Rigid")) | changes
    (folder / name).write_text(format_parameter_map(parameters))
    return folder / name


def _probes(folder: Path, slow: bool) -> list[tuple[str, list, int, dict]]:
    """(name, arguments, expected exit, options) per probe; options: tool, signal, full_device."""
    out, user = folder / "out", folder / "user"
    base = ["--fixed", CT, "--moving", MR, "--output-transform", out / "t.h5"]
    probes = [
        ("output volume = fixed input", ["--fixed", folder / "ct.nii.gz", "--moving", MR, "--output-transform",
                                         out / "t.h5", "--output-volume", folder / "ct.nii.gz"], 2, {}),
        ("output volume .png", base + ["--output-volume", out / "v.png"], 2, {}),
        ("output transform is a folder", base[:-1] + [folder / "folder.h5"], 2, {}),
        ("output transform -> /dev/full", base[:-1] + [folder / "full.tfm"], 2, {}),
        ("report folder under a file", base + ["--report-folder", folder / "file.txt" / "r"], 2, {}),
        ("output on a full device", base[:-1] + [folder / "device" / "t.h5"], 2, {"full_device": "64k"}),
    ]
    probes += [(f"fixed {kind}", ["--fixed", _image(kind, folder)] + base[2:] + FAST, 2, {})
               for kind in ("truncated", "corrupt", "nan", "inf", "4d", "rgb", "3slices", "coarse", "sheared")]
    probes += [
        ("preset iterations -5", base + ["--preset", _preset(folder, "iterations.txt",
                                                             MaximumNumberOfIterations=["-5", "-5"])] + FAST, 2, {}),
        ("preset unknown metric", base + ["--preset", _preset(folder, "metric.txt", Metric=["NoSuchMetric"])] + FAST,
         2, {}),
        ("preset binary file", base + ["--preset", folder / "binary.txt"], 2, {}),
        ("--elastix /bin/false", base + ["--elastix-executable", "/bin/false"] + FAST, 1, {}),
        ("qa: 2-D transform", ["--fixed", CT, "--moving", MR, "--transform", folder / "flat.tfm"], 2, {"tool": "qa"}),
        ("qa: report under a file", ["--fixed", CT, "--moving", MR, "--transform",
                                     resources.sample_reference_transform_path(), "--report-folder",
                                     folder / "file.txt" / "r"], 2, {"tool": "qa"}),
        # every file a run writes, inside output folders too, against the inputs and each other
        ("masks folder holds --fixed-mask", base + ["--fixed-mask", user / "fixed_mask.nrrd", "--output-masks", user],
         2, {}),
        ("stage folder holds the start pose", base + ["--initial-transform", user / "affine.h5", "--stages",
                                                      "rigid,affine", "--output-stage-transforms", user], 2, {}),
        ("transform = a stage's file", base[:-1] + [out / "stages" / "rigid.h5", "--output-stage-transforms",
                                                    out / "stages"], 2, {}),
        ("output = hard link of the input", ["--fixed", folder / "ct.nii.gz", "--moving", MR, "--output-transform",
                                             out / "t.h5", "--output-volume", folder / "hard.nii.gz"], 2, {}),
        ("report folder = DICOM input", ["--fixed", CT, "--moving", user, "--output-transform", out / "t.h5",
                                         "--report-folder", user], 2, {}),
        # unbounded or odd inputs, unvalidated values
        ("preset /dev/zero", base + ["--preset", "/dev/zero"], 2, {}),
        ("landmarks a symlink loop", base + ["--fixed-landmarks", folder / "loop.fcsv", "--moving-landmarks",
                                             folder / "loop.fcsv"], 2, {}),
        ("qa: --restarts -1", ["--fixed", CT, "--moving", MR, "--transform",
                               resources.sample_reference_transform_path(), "--restarts", "-1"], 2, {"tool": "qa"}),
        ("stale folder of a killed run", ["--fixed", CT, "--moving", MR, "--transform", folder / "flat.tfm"], 2,
         {"tool": "qa", "stale": True}),
    ]
    if slow:
        probes += [
            ("baseline (2 mm pair)", base + FAST, 0, {}),
            ("full device after registration", ["--fixed", CT, "--moving", MR, "--output-transform",
                                                folder / "device" / "t.h5", "--output-volume",
                                                folder / "device" / "v.nii"] + FAST, 4,
             {"full_device": "4m", "leave_kib": 1500}),
            ("SIGTERM during elastix", base + ["--output-volume", out / "v.nrrd"] + FAST, 143,
             {"signal": (signal.SIGTERM, "rigid registration")}),
            ("SIGINT while masking", base + FAST, 130, {"signal": (signal.SIGINT, "masking")}),
            ("SIGHUP during elastix", base + FAST, 129, {"signal": (signal.SIGHUP, "rigid registration")}),
            # registered right since the pose search climbs its score (test_cli_faults checks the pose)
            ("fixed CT as floats in [0, 1]", ["--fixed", _image("unit", folder)] + base[2:] +
             ["--no-qa", "--threads", "1"], 0, {}),
        ]
    return probes


# ---- cohort probes: ctmr-batch -------------------------------------------------------------------------------
# Refusals exit 2 with one line before anything is written (no cohort folder appears). The --slow probes start a
# LocalCluster: after each, every case record agrees with summary.csv, the folder's lock is gone and no process
# of the run is left (_run_cohort checks, then removes the cohort folder).

COHORT_FAST = ["--initialization", "none", "--bias-correction", "off", "--no-qa"]  # --threads: set per case


def _cohort_probes(folder: Path, slow: bool) -> list[tuple[str, list, int, dict]]:
    """(name, arguments, expected exit, options) of each ctmr-batch probe; writes the manifests it needs."""
    cohort, out = folder / "cohort", folder / "out" / "cohort"
    cohort.mkdir()
    (cohort / "loop").symlink_to(cohort / "loop")
    os.mkfifo(cohort / "pipe")
    manifests = {"good": f"a,{CT},{MR},\nb,{CT},{MR},\n", "one": f"a,{CT},{MR},\n",
                 "reserved": f"a,{CT},{MR},\nsummary.csv,{CT},{MR},\n", "loop": f"a,{CT},loop,\n",
                 "stages": f"a,{CT},{MR},\nb,{CT},{MR},\"affine,rigid\"\n"}
    for name, rows in manifests.items():
        (cohort / f"{name}.csv").write_text("case,fixed,moving,stages\n" + rows)
    (cohort / "pipe.csv").write_text(f"case,fixed,moving,fixed_landmarks\na,{CT},{MR},pipe\n")

    def batch(manifest: str, *options) -> list:
        return [cohort / f"{manifest}.csv", "--output-dir", out, "--dashboard-address", ":0", *options]

    refused = {"tool": "batch"}
    probes = [
        ("cohort: output folder is a file", [cohort / "good.csv", "--output-dir", folder / "file.txt"], 2, refused),
        ("cohort: output under a file", [cohort / "good.csv", "--output-dir", folder / "file.txt" / "c"], 2, refused),
        ("cohort: --memory-per-worker 4XB", batch("good", "--memory-per-worker", "4XB"), 2, refused),
        ("cohort: unreachable scheduler", batch("good", "--scheduler", "tcp://127.0.0.1:9", "--scheduler-timeout",
                                                "2"), 2, refused),
        ("cohort: case id summary.csv", batch("reserved"), 2, refused),
        ("cohort: input a symlink loop", batch("loop"), 2, refused),
        ("cohort: input a named pipe", batch("pipe"), 2, refused),
        ("cohort: stages affine,rigid", batch("stages"), 2, refused),
        ("cohort: preset not text", batch("good", "--preset", CT), 2, refused),
        ("cohort: folder in use", batch("good"), 2, {"tool": "batch", "locked": True}),
    ]
    if slow:
        run = {"tool": "batch", "records": True}
        probes += [
            ("cohort: baseline --no-qa", batch("good", "--workers", "2", *COHORT_FAST), 0, run),
            ("cohort: case over --case-timeout", batch("one", "--workers", "1", "--case-timeout", "2", *COHORT_FAST),
             1, run),
            ("cohort: SIGINT to its group", batch("good", "--workers", "1", *COHORT_FAST), 130,
             run | {"signal": signal.SIGINT}),
            ("cohort: SIGTERM to the runner", batch("good", "--workers", "2", *COHORT_FAST), 143,
             run | {"signal": signal.SIGTERM, "runner_only": True}),
            ("cohort: SIGHUP to its group", batch("good", "--workers", "2", *COHORT_FAST), 129,
             run | {"signal": signal.SIGHUP}),
        ]
    return probes


def _run_cohort(arguments: list, options: dict, folder: Path) -> tuple[int, str]:
    """Run ctmr-batch in a session of its own; signal it (its whole group, as a terminal does, or the runner
    alone) a second into its first case; check what a --slow probe leaves, then remove it. A broken check turns
    the exit code into -1 with a line that says why."""
    import psutil

    from CTMRRegistrationLib.batch.summary import LOCK_NAME

    out = Path(arguments[arguments.index("--output-dir") + 1])
    environment = os.environ | {"PYTHONPATH": LIBRARY, "TMPDIR": str(folder / "tmp")}
    holder = None
    if options.get("locked"):
        out.mkdir(parents=True)
        code = ("import sys, time; from pathlib import Path\n"
                "from CTMRRegistrationLib.batch.summary import cohort_lock\n"
                "with cohort_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)")
        holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                                  env=environment)
        holder.stdout.readline()
    command = [sys.executable, "-m", "CTMRRegistrationLib", "batch", *map(str, arguments)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
                               start_new_session=True)
    processes = []
    try:
        if "signal" in options:
            processes = _first_case_running(process, out)
            if options.get("runner_only"):
                process.send_signal(options["signal"])
            else:
                os.killpg(process.pid, options["signal"])
        _, stderr = process.communicate(timeout=600)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
            shutil.rmtree(out)
    code = process.returncode
    if options.get("records"):
        time.sleep(0.5)
        problems = [f"{record.parent.name}: record {json.loads(record.read_text())['status']}, summary "
                    f"{row['status']}" for record, row in _cohort_rows(out)
                    if json.loads(record.read_text())["status"] != row["status"]]
        problems += [f"{LOCK_NAME} left"] if (out / LOCK_NAME).exists() else []
        problems += [f"{len(alive)} processes left" for alive in [[p for p in processes if p.is_running() and
                                                                 p.status() != psutil.STATUS_ZOMBIE]] if alive]
        shutil.rmtree(folder / "tmp" / "dask-scratch-space", ignore_errors=True)  # Dask's own, empty after a run
        shutil.rmtree(out, ignore_errors=True)
        if problems:
            code, stderr = -1, stderr + "ctmr-batch: PROBE: " + "; ".join(problems) + "\n"
    return code, stderr


def _first_case_running(process: subprocess.Popen, out: Path) -> list:
    """Wait until a ctmr-register child of the run writes into `out`, a second more; every process of the run."""
    import psutil

    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        try:
            processes = psutil.Process(process.pid).children(recursive=True)
            if any(str(out) in " ".join(child.cmdline()) and "CTMRRegistrationLib.batch.case" in child.cmdline()
                   for child in processes):
                time.sleep(1.0)
                return psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            pass
        time.sleep(0.1)
    return []


def _cohort_rows(out: Path) -> list[tuple[Path, dict]]:
    """(case.json, summary row) of every case with a record."""
    if not (out / "summary.csv").is_file():
        return []
    with open(out / "summary.csv", newline="") as stream:
        rows = {row["case"]: row for row in csv.DictReader(stream)}
    return [(record, rows.get(record.parent.name, {"status": "absent"})) for record in sorted(out.glob("*/case.json"))]


def _prepare(folder: Path) -> None:
    (folder / "out").mkdir()
    (folder / "device").mkdir()
    (folder / "folder.h5").mkdir()
    (folder / "full.tfm").symlink_to("/dev/full")
    (folder / "file.txt").write_text("x")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 4)
    shutil.copy(CT, folder / "ct.nii.gz")
    os.link(folder / "ct.nii.gz", folder / "hard.nii.gz")
    (folder / "user").mkdir()  # a user's folder: their mask and start pose, and (as an input) a DICOM folder
    (folder / "user" / "fixed_mask.nrrd").write_text("the user's own mask")
    sitk.WriteTransform(sitk.Euler3DTransform(), str(folder / "user" / "affine.h5"))
    (folder / "loop.fcsv").symlink_to(folder / "loop.fcsv")
    sitk.WriteTransform(sitk.Euler2DTransform(), str(folder / "flat.tfm"))


def _run(arguments: list, options: dict, folder: Path) -> tuple[int, str]:
    if options.get("tool") == "batch":
        return _run_cohort(arguments, options, folder)
    tool = "qa_cli" if options.get("tool") == "qa" else "register_cli"
    command = [sys.executable, "-m", f"CTMRRegistrationLib.apps.{tool}", *map(str, arguments)]
    environment = os.environ | {"PYTHONPATH": LIBRARY, "TMPDIR": str(folder / "tmp")}
    if "full_device" in options:
        device = folder / "device"
        fill = (f"dd if=/dev/zero of={device}/filler bs=1k count=$(( $(df -k --output=avail {device} | tail -1) - "
                f"{options.get('leave_kib', 0)} )) 2>/dev/null")
        script = (f"mount -t tmpfs -o size={options['full_device']} none {device} && {fill}; \"$@\"; code=$?; "
                  f"ls -A {device} | grep -v filler >&2; exit $code")
        command = ["unshare", "-rm", "sh", "-c", script, "sh"] + command
    if "signal" not in options:
        done = subprocess.run(command, capture_output=True, text=True, env=environment)
        return done.returncode, done.stderr
    number, stage = options["signal"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    stderr = signal_at_step(process, stage, number)
    return process.returncode, stderr


def _digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def _message(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(("ctmr-register:", "ctmr-qa:", "ctmr-batch:"))]
    if "Traceback" in stderr:
        return "TRACEBACK: " + stderr.strip().splitlines()[-1]
    return lines[-1].split(":", 1)[1].strip() if lines else (stderr.strip().splitlines() or [""])[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="add the probes that register the bundled pair")
    args = parser.parse_args()
    rows, good = [], 0
    with tempfile.TemporaryDirectory(prefix="ctmr-fault-probe-") as root:
        folder = Path(root)
        _prepare(folder)
        for name, arguments, expected, options in _probes(folder, args.slow) + _cohort_probes(folder, args.slow):
            if "full_device" in options and shutil.which("unshare") is None:
                rows.append((name, "-", expected, "-", "-", "skipped: no unshare"))
                continue
            (folder / "tmp").mkdir()
            if options.get("stale"):  # a private folder left by a SIGKILLed run (pid 2**22 + 1: none)
                (folder / "tmp" / f"ctmr-elastix-{2**22 + 1}-x").mkdir()
            inputs = [a for a in arguments if isinstance(a, Path) and a.is_file() and a.suffix != ".h5"]
            before = _digest(inputs)
            started = time.perf_counter()
            code, stderr = _run(arguments, options, folder)
            seconds = time.perf_counter() - started
            left = sorted(p.name for p in (folder / "out").iterdir()) + sorted(
                p.name for p in (folder / "tmp").iterdir())
            if "full_device" in options:
                left += [line.strip() for line in stderr.splitlines()[-3:] if line.strip() in ("t.h5", "v.nii")
                         or line.strip().endswith(".partial")]
            unchanged = _digest(inputs) == before
            ok = code == expected and unchanged and "Traceback" not in stderr and (
                code in (0, 4) or not [p for p in left if p not in ("t.h5",)])
            good += ok
            rows.append((name, code, expected, ",".join(left) or "none", "yes" if unchanged else "NO",
                         f"{seconds:5.1f} s  {_message(stderr)}"))
            shutil.rmtree(folder / "tmp")
            for item in (folder / "out").iterdir():
                item.unlink() if item.is_file() else shutil.rmtree(item)
    print(f"{'probe':32} {'exit':>4} {'want':>4}  {'left':14} {'inputs':6}  message")
    for name, code, expected, left, unchanged, message in rows:
        print(f"{name:32} {code!s:>4} {expected!s:>4}  {left:14} {unchanged:6}  {message}")
    print(f"\n{good} of {len(rows)} probes behave as expected")
    return 0 if good == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
