"""The fault catalogue against the command-line tools: each case asserts the exit code, a one-line
message naming the cause, that no partial output exists and that no input changed."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_signals import signal_at_step
from conftest import p95_distance
from test_output_files import LIBRARY, needs_mount_namespace, run_on_full_device

from CTMRRegistrationLib.apps import qa_cli, register_cli
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.errors import InputError, RegistrationError
from CTMRRegistrationLib.core.geometry import matrix_from_sitk
from CTMRRegistrationLib.core.private_folders import private_folder, remove_stale_folders
from CTMRRegistrationLib.elastix.executable import (
    ElastixExecutable,
    ElastixProgress,
    _run,
    run_elastix_executable,
    time_limit_seconds,
)
from CTMRRegistrationLib.elastix.parameters import ElastixJob, read_parameter_file
from CTMRRegistrationLib.registration.input_checks import check_mirror_evidence

CT, MR = str(resources.sample_ct_path()), str(resources.sample_mr_path())
FAST = ["--initialization", "none", "--bias-correction", "off", "--no-qa", "--threads", "1"]


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def input_digests():
    before = {path: digest(path) for path in (CT, MR)}
    yield before
    assert {path: digest(path) for path in before} == before  # no test of this module changed the bundled pair


def register(capsys, *args) -> tuple[int, str]:
    code = register_cli.main([str(a) for a in args] + ["--json"])
    captured = capsys.readouterr()
    message = json.loads(captured.out.strip().splitlines()[-1]).get("error", "")
    assert len(captured.err.strip().splitlines()[-1]) > 0 and "Traceback" not in captured.err
    return code, message


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_output_volume_on_the_fixed_input_is_refused(tmp_path, capsys, input_digests):
    fixed = tmp_path / "ct.nii.gz"
    fixed.write_bytes(Path(CT).read_bytes())
    before = digest(fixed)
    code, message = register(capsys, "--fixed", fixed, "--moving", MR, "--output-transform", tmp_path / "t.h5",
                             "--output-volume", tmp_path / "sub" / ".." / "ct.nii.gz")
    assert code == register_cli.EXIT_INPUT and "--output-volume would overwrite the input --fixed" in message
    assert digest(fixed) == before and files_in(tmp_path) == ["ct.nii.gz"]


@pytest.mark.parametrize("option, value, expected", [
    ("--output-volume", "v.png", "unsupported file type"),
    ("--output-transform", "folder.h5", "is a folder"),
    ("--output-transform", "full.tfm", "not a regular file"),
    ("--report-folder", "file.txt/report", "is a file, not a folder"),
    ("--output-inverse-transform", "t.h5", "would both write"),
    ("--output-elastix-transform", "e.json", "unsupported file type"),
])
def test_unusable_outputs_are_refused_before_any_work(tmp_path, capsys, option, value, expected):
    (tmp_path / "folder.h5").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "full.tfm").symlink_to("/dev/full")
    before = files_in(tmp_path)
    arguments = ["--fixed", CT, "--moving", MR, "--output-transform", tmp_path / "t.h5", option, tmp_path / value]
    code = register_cli.main([str(a) for a in arguments] + ["--json"])
    captured = capsys.readouterr()
    assert code == register_cli.EXIT_INPUT and expected in json.loads(captured.out)["error"]
    assert "preparing images" not in captured.err  # refused before any work
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("arguments, expected", [
    (["--fixed-mask", "{tmp}/out/fixed_mask.nrrd", "--output-masks", "{tmp}/out"],
     "--output-masks (fixed_mask.nrrd) would overwrite the input --fixed-mask"),
    (["--initial-transform", "{tmp}/out/rigid.h5", "--output-stage-transforms", "{tmp}/out"],
     "--output-stage-transforms (rigid.h5) would overwrite the input --initial-transform"),
    (["--output-stage-transforms", "{tmp}/out", "--output-transform", "{tmp}/out/rigid.h5"],
     "--output-stage-transforms (rigid.h5) and --output-transform would both write"),
    (["--moving", "{tmp}/dicom", "--report-folder", "{tmp}/dicom"], "inside the input folder --moving"),
    (["--fixed-landmarks", "{tmp}/loop.fcsv", "--moving-landmarks", "{tmp}/loop.fcsv"],
     "Too many levels of symbolic links"),
    (["--preset", "/dev/zero"], "not a regular file"),
])
def test_no_output_folder_overwrites_an_input_or_another_output(tmp_path, capsys, arguments, expected):
    """Every file a run will write, those inside output folders included, is planned before any work."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "fixed_mask.nrrd").write_text("the user's mask")
    (tmp_path / "out" / "rigid.h5").write_text("the user's start pose")
    (tmp_path / "dicom").mkdir()
    (tmp_path / "loop.fcsv").symlink_to(tmp_path / "loop.fcsv")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    given = ["--fixed", CT, "--moving", MR, "--output-transform", str(tmp_path / "t.h5")]
    given += [argument.format(tmp=tmp_path) for argument in arguments]
    code = register_cli.main(given + ["--json"])
    captured = capsys.readouterr()
    assert code == register_cli.EXIT_INPUT, captured.err
    assert expected in json.loads(captured.out.strip().splitlines()[-1])["error"]
    assert "preparing images" not in captured.err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_qa_refuses_a_negative_number_of_restarts(capsys):
    code = qa_cli.main(["--fixed", CT, "--moving", MR, "--transform", str(resources.sample_reference_transform_path()),
                        "--restarts", "-1"])
    assert code == qa_cli.EXIT_INPUT and "--restarts must be 0 or more" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_with_a_hint_and_debug_shows_the_traceback(capsys, monkeypatch):
    def broken(*_):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(register_cli, "register_files", broken)
    arguments = ["--fixed", CT, "--moving", MR, "--output-transform", "/tmp/ctmr-unused.h5"]
    assert register_cli.main(arguments) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["ctmr-register: error: unexpected ZeroDivisionError: division by zero "
                                        "(rerun with --debug for the traceback)"]
    assert register_cli.main(arguments + ["--debug"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_private_folders_of_dead_runs_are_removed_at_the_next_start(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"ctmr-elastix-{dead.stdout.strip()}-abc"
    alive = tmp_path / f"ctmr-elastix-{os.getpid()}-def"
    other = tmp_path / "ctmr-something"
    for folder in (stale, alive, other):
        folder.mkdir()
    (stale / "fixed.mha").write_text("a copy of a patient image")
    assert remove_stale_folders(tmp_path) == [stale]
    assert not stale.exists() and alive.exists() and other.exists()
    with private_folder("elastix") as folder:
        assert folder.name.startswith(f"ctmr-elastix-{os.getpid()}-") and (folder.stat().st_mode & 0o777) == 0o700
    assert not folder.exists()


def damaged(kind: str, tmp_path: Path) -> Path:
    ct = sitk.ReadImage(CT)
    if kind in ("truncated", "corrupt"):
        data = bytearray(Path(CT).read_bytes())
        if kind == "truncated":
            data = data[: int(len(data) * 0.9)]
        else:
            data[len(data) // 2] ^= 0xFF
        path = tmp_path / f"{kind}.nii.gz"
        path.write_bytes(bytes(data))
        return path
    path = tmp_path / f"{kind}.nii.gz"
    if kind == "nan":
        image = sitk.Cast(ct, sitk.sitkFloat32)
        image[50, 50, 60] = float("nan")
    elif kind == "inf":
        image = sitk.Cast(ct, sitk.sitkFloat32)
        image[50, 50, 60] = float("inf")
        path = tmp_path / "inf.mha"
    elif kind == "4d":
        image = sitk.JoinSeries([ct, ct])
    elif kind == "rgb":
        image = sitk.Compose([sitk.Cast(ct[:, :, 50:80], sitk.sitkUInt8)] * 3)
        path = tmp_path / "rgb.nrrd"
    elif kind == "3 slices":
        image = ct[:, :, 60:63]
    elif kind == "100 mm voxels":
        image = sitk.Image(ct)
        image.SetSpacing([100.0] * 3)
    else:  # sheared
        image = sitk.Image(ct)
        direction = np.asarray(ct.GetDirection()).reshape(3, 3)
        sheared = direction[:, 1] + 0.3 * direction[:, 0]
        direction[:, 1] = sheared / np.linalg.norm(sheared)
        image.SetDirection(direction.ravel().tolist())
        path = tmp_path / "sheared.nrrd"
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("kind, expected", [
    ("truncated", "damaged file, the compressed data ends early"),
    ("corrupt", "damaged file, corrupt compressed data"),
    ("nan", "contains NaN or infinite voxel values"),
    ("inf", "contains NaN or infinite voxel values"),
    ("4d", "is a 4-D image"),
    ("rgb", "has 3 values per voxel"),
    ("3 slices", "the fixed image is too thin"),
    ("100 mm voxels", "the fixed image's voxels are too coarse"),
    ("sheared", "the fixed image's direction matrix is not orthonormal"),
])
def test_unusable_inputs_are_refused_with_their_cause(tmp_path, capsys, input_digests, kind, expected):
    fixed = damaged(kind, tmp_path)
    before = digest(fixed)
    code, message = register(capsys, "--fixed", fixed, "--moving", MR, "--output-transform", tmp_path / "out" / "t.h5",
                             *FAST)
    assert code == register_cli.EXIT_INPUT and expected in message
    assert digest(fixed) == before and not (tmp_path / "out").exists()


def preset(tmp_path: Path, **changes) -> Path:
    parameters = read_parameter_file(resources.parameter_file("Rigid"))
    text = "".join(f"({key} {' '.join(values)})\n" for key, values in (parameters | changes).items())
    path = tmp_path / "rigid.txt"
    path.write_text(text.replace('(Transform EulerTransform)', '(Transform "EulerTransform")'))
    return path


@pytest.mark.parametrize("changes, expected", [
    ({"MaximumNumberOfIterations": ["-5", "-5"]}, "(MaximumNumberOfIterations -5 -5): -5 is out of range"),
    ({"Metric": ['"NoSuchMetric"']}, "unknown Metric 'NoSuchMetric'"),
    ({"NumberOfSpatialSamples": ["many"]}, "'many' is not a whole number"),
    ({"ErodeMask": ['"yes"']}, 'write "true" or "false"'),
    ({"Transform": ['"EulerTransform"', '"AffineTransform"']}, "takes one value"),
])
def test_bad_presets_are_refused_before_elastix_starts(tmp_path, capsys, changes, expected):
    code, message = register(capsys, "--fixed", CT, "--moving", MR, "--output-transform", tmp_path / "t.h5",
                             "--preset", preset(tmp_path, **changes), *FAST)
    assert code == register_cli.EXIT_INPUT and "rigid.txt" in message and expected in message
    assert not (tmp_path / "t.h5").exists()


def test_binary_preset_is_refused(tmp_path, capsys):
    binary = tmp_path / "preset.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    code, message = register(capsys, "--fixed", CT, "--moving", MR, "--output-transform", tmp_path / "t.h5",
                             "--preset", binary)
    assert code == register_cli.EXIT_INPUT and "not an elastix parameter file (not text)" in message


def test_failing_elastix_names_its_exit_status(tmp_path, capsys):
    code, message = register(capsys, "--fixed", CT, "--moving", MR, "--output-transform", tmp_path / "t.h5",
                             "--elastix-executable", "/bin/false", *FAST)
    assert code == register_cli.EXIT_FAILED and message == "elastix failed (exit status 1): it printed nothing"
    assert files_in(tmp_path) == []


def test_failing_elastix_names_the_line_that_says_why(tmp_path):
    fake = tmp_path / "elastix"
    fake.write_text("#!/bin/sh\necho 'Running elastix with parameter file 0: \"p\".'\n"
                    "echo 'itk::ExceptionObject (0x1)'\necho 'Location: \"unknown\"'\n"
                    "echo 'Description: itk::ERROR: Elastix: the images have no common samples'\n"
                    "echo 'Error occurred during actual registration.'\nexit 1\n")
    fake.chmod(0o755)
    image = sitk.Image(20, 20, 20, sitk.sitkFloat32) + 1.0
    job = ElastixJob(image, image, [read_parameter_file(resources.parameter_file("Rigid"))])
    with pytest.raises(RegistrationError) as caught:
        run_elastix_executable(ElastixExecutable(fake), job)
    assert str(caught.value).splitlines()[0] == ("elastix failed (exit status 1): itk::ERROR: Elastix: the images "
                                                 "have no common samples")


def test_elastix_is_stopped_at_its_time_limit(tmp_path):
    hanging = tmp_path / "elastix"
    hanging.write_text(f"#!/bin/sh\necho started {tmp_path}\nexec sleep 60\n")
    hanging.chmod(0o755)
    started = time.perf_counter()
    with pytest.raises(RegistrationError, match="elastix stopped after 1 s, the time limit"):
        _run([str(hanging)], None, ElastixProgress([{}]), None, None, time_limit=1.0)
    assert time.perf_counter() - started < 10.0
    assert not running_with(tmp_path)


def test_time_limit_grows_with_the_work_asked(sample_ct, sample_mr):
    rigid = read_parameter_file(resources.parameter_file("Rigid"))
    deformable = read_parameter_file(resources.parameter_file("Deformable"))
    limits = [time_limit_seconds(ElastixJob(sample_ct, sample_mr, [parameters])) for parameters in
              (rigid, rigid | {"MaximumNumberOfIterations": ["100000"]}, deformable)]
    assert 120 < limits[0] < 600 and limits[1] > 50 * limits[0] and limits[2] > limits[0]


def test_qa_refuses_a_2d_transform_and_an_unusable_report_folder(tmp_path, capsys):
    flat = tmp_path / "flat.tfm"
    sitk.WriteTransform(sitk.Euler2DTransform(), str(flat))
    (tmp_path / "file.txt").write_text("x")
    for arguments, expected in (
        (["--transform", flat], "flat.tfm is a 2-D transform"),
        (["--transform", resources.sample_reference_transform_path(), "--report-folder", tmp_path / "file.txt" / "r"],
         "--report-folder: " + str(tmp_path / "file.txt") + " is a file, not a folder"),
    ):
        code = qa_cli.main(["--fixed", CT, "--moving", MR, *map(str, arguments), "--json", "--restarts", "0"])
        captured = capsys.readouterr()
        assert code == qa_cli.EXIT_INPUT and expected in json.loads(captured.out)["error"]
        assert "Traceback" not in captured.err
    assert files_in(tmp_path) == ["file.txt", "flat.tfm"]


def running_with(text) -> list[str]:
    """Command lines of running processes that mention `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(text) in command and "pytest" not in command:
                found.append(command)
    return found


def start_cli(tmp_path: Path, *args) -> subprocess.Popen:
    (tmp_path / "tmp").mkdir()
    environment = os.environ | {"PYTHONPATH": LIBRARY, "TMPDIR": str(tmp_path / "tmp")}
    command = [sys.executable, "-m", "CTMRRegistrationLib.apps.register_cli", *map(str, args)]
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment)


@pytest.mark.slow
@pytest.mark.parametrize("signal_number, stage", [(signal.SIGTERM, "rigid registration (elastix)"),
                                                  (signal.SIGHUP, "rigid registration (elastix)"),
                                                  (signal.SIGINT, "masking")])
def test_signals_stop_cleanly(tmp_path, signal_number, stage):
    process = start_cli(tmp_path, "--fixed", CT, "--moving", MR, "--output-transform", tmp_path / "out" / "t.h5",
                        "--output-volume", tmp_path / "out" / "v.nrrd", *FAST)
    stderr = signal_at_step(process, stage, signal_number, timeout=60)
    assert process.returncode == 128 + signal_number, stderr
    name = signal.Signals(signal_number).name
    assert stderr.strip().splitlines()[-1] == f"ctmr-register: stopped by {name}: no partial output left"
    assert files_in(tmp_path) == ["tmp"]  # no output, no partial file, no elastix temporary folder
    assert not running_with(tmp_path)


@pytest.mark.slow
@needs_mount_namespace
def test_full_device_after_registration_keeps_the_transform(tmp_path):
    """Room for the transform (written first) but not for the resampled volume: a warning, exit 4."""
    folder = tmp_path / "full"
    folder.mkdir()
    command = [sys.executable, "-m", "CTMRRegistrationLib.apps.register_cli", "--fixed", CT, "--moving", MR,
               "--output-transform", folder / "t.h5", "--output-volume", folder / "v.nii", *FAST]
    script = f"; code=$?; ls -a {folder} >&2; exit $code"
    done = run_on_full_device(folder, ["sh", "-c", " ".join(f"'{c}'" for c in map(str, command)) + script],
                              size="4m", leave_kib=1500, env=os.environ | {"PYTHONPATH": LIBRARY})
    assert done.returncode == register_cli.EXIT_OUTPUT, done.stderr[-3000:]
    warning = [line for line in done.stderr.splitlines() if line.startswith("ctmr-register: warning:")]
    assert len(warning) == 1 and warning[0].endswith("volume not written: cannot write "
                                                     f"{folder / 'v.nii'}: no space left on the device")
    assert "wrote transform:" in done.stdout and "wrote volume" not in done.stdout
    assert done.stderr.split()[-4:] == [".", "..", "filler", "t.h5"]  # no v.nii, no staging folder


@pytest.mark.slow
def test_a_ct_with_unrecognised_intensities_is_still_registered(tmp_path, capsys, reference_ct_to_mr,
                                                                ct_object_points):
    """A CT rescaled to [0, 1] is taken for an MR; before its poses climbed the score, the search called the
    moving MR mirrored on it; now it finds the right pose (the image as it is wins by 5.2)."""
    ct = sitk.Cast(sitk.ReadImage(CT), sitk.sitkFloat32)
    fixed = tmp_path / "ct01.nrrd"
    sitk.WriteImage(sitk.RescaleIntensity(ct, 0.0, 1.0), str(fixed))
    code, _ = register(capsys, "--fixed", fixed, "--moving", MR, "--output-transform", tmp_path / "t.h5",
                       "--no-qa", "--threads", "1", "--bias-correction", "off")
    assert code == 0
    found = matrix_from_sitk(sitk.ReadTransform(str(tmp_path / "t.h5")))
    assert p95_distance(found, reference_ct_to_mr, ct_object_points) < 3.0


def test_a_mirror_finding_on_unrecognised_intensities_names_the_image_instead_of_the_header():
    ct = sitk.RescaleIntensity(sitk.Cast(sitk.ReadImage(CT), sitk.sitkFloat32), 0.0, 1.0)
    images = {"fixed": ct, "moving": sitk.ReadImage(MR)}
    with pytest.raises(InputError) as raised:
        check_mirror_evidence(images, {"fixed": None, "moving": None})
    assert str(raised.value).startswith("the fixed image's intensities span only [0, 1]")
    assert "--fixed-modality" in str(raised.value)
    check_mirror_evidence(images, {"fixed": "CT", "moving": None})  # a modality given: the finding stands


def failing_write(folder, *args, **kwargs):
    """A report writer that dies half-way as on a full disk (fault injection; the pictures and MRML are real)."""
    (Path(folder) / "report.html").write_text("<html>half")
    raise OSError(28, "No space left on device")


def test_qa_report_failure_is_a_warning_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(qa_cli, "write_qa_report", failing_write)
    code = qa_cli.main(["--fixed", CT, "--moving", MR, "--transform", str(resources.sample_reference_transform_path()),
                        "--restarts", "0", "--threads", "1", "--report-folder", str(tmp_path / "report")])
    captured = capsys.readouterr()
    assert code == qa_cli.EXIT_OUTPUT and "verdict: ok" in captured.out
    assert captured.err.strip().splitlines()[-1] == (f"ctmr-qa: warning: report not written: cannot write "
                                                     f"{tmp_path / 'report'}: No space left on device")
    assert files_in(tmp_path) == []


@pytest.mark.slow
def test_register_report_failure_keeps_the_transform(tmp_path, capsys, monkeypatch, reference_ct_to_mr,
                                                    ct_object_points):
    monkeypatch.setattr(register_cli.RegistrationLogic, "write_report", staticmethod(failing_write))
    code = register_cli.main(["--fixed", CT, "--moving", MR, "--output-transform", str(tmp_path / "t.h5"),
                              "--report-folder", str(tmp_path / "report"), "--threads", "1", "--json"])
    captured = capsys.readouterr()
    assert code == register_cli.EXIT_OUTPUT, captured.err[-2000:]
    report = json.loads(captured.out)
    assert report["outputs"] == {"transform": str(tmp_path / "t.h5")}
    assert any(w.startswith("report not written: cannot write") for w in report["warnings"])
    written = sitk.ReadTransform(str(tmp_path / "t.h5"))
    assert p95_distance(matrix_from_sitk(written), reference_ct_to_mr, ct_object_points) < 5.0
    assert files_in(tmp_path) == ["t.h5"]
