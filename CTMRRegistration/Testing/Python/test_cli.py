"""The `ctmr-register` contract: outputs, JSON, and one-line errors with non-zero exits for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import p95_distance

from CTMRRegistrationLib import InputError, RegistrationLogic
from CTMRRegistrationLib.apps.register_cli import EXIT_FAILED, EXIT_INPUT, build_parser, main
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import matrix_from_sitk


@pytest.mark.slow
def test_demo_writes_outputs_and_json(tmp_path, capsys, reference_ct_to_mr, ct_object_points, sample_ct):
    assert main(["--demo", "--output-dir", str(tmp_path), "--json", "--threads", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok" and report["seconds"] > 0
    matrix = np.array(report["transform"])
    written = matrix_from_sitk(sitk.ReadTransform(str(tmp_path / "transform_fixedCT_to_movingMR.h5")))
    np.testing.assert_allclose(written, matrix, atol=1e-6)
    assert p95_distance(written, reference_ct_to_mr, ct_object_points) < 5.0
    assert report["metrics"]["reference_agreement_mm"]["p95"] < 5.0
    resampled = sitk.ReadImage(str(tmp_path / "mr_resampled_on_ct.nrrd"))
    assert resampled.GetSize() == sample_ct.GetSize()
    np.testing.assert_allclose(resampled.GetOrigin(), sample_ct.GetOrigin(), atol=1e-6)
    overlay = sitk.ReadImage(str(tmp_path / "overlay.png"))
    assert overlay.GetNumberOfComponentsPerPixel() == 3 and min(overlay.GetSize()) > 100
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "ok"


def write(image: sitk.Image, path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)


def run_cli(capsys, *args) -> tuple[int, str, dict]:
    code = main(list(args) + ["--json"])
    captured = capsys.readouterr()
    return code, captured.err, json.loads(captured.out)


def test_missing_file(tmp_path, capsys):
    code, err, report = run_cli(capsys, "--fixed", str(tmp_path / "nope.nii.gz"), "--moving",
                                str(resources.sample_mr_path()), "--output-transform", str(tmp_path / "t.h5"))
    assert code == EXIT_INPUT and report["status"] == "error"
    assert "not found" in report["error"] and "nope.nii.gz" in err


def test_unreadable_format(tmp_path, capsys):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\nthis is broken\n")
    code, _, report = run_cli(capsys, "--fixed", str(bad), "--moving", str(resources.sample_mr_path()),
                              "--output-transform", str(tmp_path / "t.h5"))
    assert code == EXIT_INPUT and "cannot read volume bad.nrrd" in report["error"]


def test_two_dimensional_image(tmp_path, capsys):
    flat = write(sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(30, 40)).astype(np.float32)),
                 tmp_path / "flat.nrrd")
    code, _, report = run_cli(capsys, "--fixed", flat, "--moving", str(resources.sample_mr_path()),
                              "--output-transform", str(tmp_path / "t.h5"))
    assert code == EXIT_INPUT and "not 3-D" in report["error"]


def test_empty_image(tmp_path, capsys):
    empty = write(sitk.Image(20, 20, 20, sitk.sitkInt16), tmp_path / "empty.nii.gz")
    code, _, report = run_cli(capsys, "--fixed", str(resources.sample_ct_path()), "--moving", empty,
                              "--output-transform", str(tmp_path / "t.h5"))
    assert code == EXIT_INPUT and "moving image is empty" in report["error"]


def test_disjoint_fields_of_view(tmp_path, capsys, sample_mr):
    far = sitk.Image(sample_mr)
    far.SetOrigin([o + 5000.0 for o in sample_mr.GetOrigin()])
    code, _, report = run_cli(capsys, "--fixed", str(resources.sample_ct_path()), "--moving",
                              write(far, tmp_path / "far.nii.gz"), "--output-transform", str(tmp_path / "t.h5"),
                              "--initialization", "none")
    assert code == EXIT_FAILED and "do not overlap" in report["error"]
    assert not (tmp_path / "t.h5").exists()


def test_wrong_output_suffix(tmp_path, capsys):
    code, _, report = run_cli(capsys, "--fixed", str(resources.sample_ct_path()), "--moving",
                              str(resources.sample_mr_path()), "--output-transform", str(tmp_path / "t.png"))
    assert code == EXIT_INPUT and "--output-transform t.png: unsupported file type" in report["error"]


def test_module_entry_point_help():
    completed = subprocess.run([sys.executable, "-m", "CTMRRegistrationLib", "--help"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and "--output-transform" in completed.stdout


@pytest.mark.parametrize("old, new, value", [
    (["--init", "center"], "initialization", "center"), (["--no-masks"], "use_masks", False),
    (["--report", "qa"], "report_folder", Path("qa")),
    (["--fixed-seg", "s.nrrd"], "fixed_segmentation", Path("s.nrrd")),
    (["--output-crop-roi", "r.mrk.json"], "registered_region", Path("r.mrk.json")),
    (["--elastix", "/opt/elastix"], "elastix_executable", Path("/opt/elastix")),
])
def test_old_option_names_still_work_with_a_warning(capsys, old, new, value):
    args = build_parser().parse_args(old)
    assert getattr(args, new) == value
    assert f"{old[0]} is deprecated" in capsys.readouterr().err


def test_old_register_keywords_still_work_with_a_warning(context):
    with pytest.warns(DeprecationWarning, match="'report_directory' is deprecated, use 'report_folder'"):
        with pytest.raises(InputError, match="a report needs the quality assessment"):
            RegistrationLogic(context).register(None, None, report_directory="qa", qa=False)
    with pytest.raises(TypeError, match="no_such_option"):
        RegistrationLogic(context).register(None, None, no_such_option=1)
