"""`ctmr-batch` refuses a malformed manifest or bad options before any work starts (exit 2, line named);
fingerprints change exactly when an input's content or an option changes."""

import argparse
import os

import pytest

from CTMRRegistrationLib.batch import cli
from CTMRRegistrationLib.batch.cli import EXIT_INPUT, case_job, main
from CTMRRegistrationLib.batch.manifest import (
    PATH_COLUMNS,
    VALUE_COLUMNS,
    case_fingerprint,
    content_digest,
    read_manifest,
)
from CTMRRegistrationLib.core.errors import InputError


def manifest(tmp_path, text: str):
    path = tmp_path / "cases.csv"
    path.write_text(text)
    return path


def test_paths_are_relative_to_the_manifest_and_columns_map_to_options(tmp_path):
    (tmp_path / "images").mkdir()
    path = manifest(tmp_path, "case,fixed,moving,stages,fixed_landmarks,moving_mask\n"
                              "p1,images/ct.nii.gz,/data/mr.nii.gz,\"rigid,affine\",,m.nrrd\n\n"
                              "p2,images/ct2.nii.gz,mr2.nii.gz,,,\n")
    first, second = read_manifest(path)
    assert (first.case, first.line, second.line) == ("p1", 2, 4)
    assert first.paths["fixed"] == tmp_path / "images" / "ct.nii.gz"
    assert first.register_arguments() == ["--fixed", str(tmp_path / "images/ct.nii.gz"), "--moving", "/data/mr.nii.gz",
                                          "--moving-mask", str(tmp_path / "m.nrrd"), "--stages", "rigid,affine"]
    assert second.register_arguments() == ["--fixed", str(tmp_path / "images/ct2.nii.gz"),
                                           "--moving", str(tmp_path / "mr2.nii.gz")]


@pytest.mark.parametrize("text, message", [
    ("", "cases.csv: the manifest is empty"),
    ("\n \n", "cases.csv: the manifest is empty"),
    ("case,fixed,moving\n", "cases.csv: the manifest has a header but no cases"),
    ("case,fixed\na,ct.nii\n", "cases.csv line 1: missing column(s) moving"),
    ("\ncase,moving,fixed,colour\na,b,c,d\n", "cases.csv line 2: unknown column(s) colour"),
    ("case,fixed,moving,fixed\na,b,c,d\n", "cases.csv line 1: column(s) fixed appear twice"),
    ("case,fixed,moving\na,ct,mr\nb,ct,mr\n\na,ct2,mr2\n", "cases.csv line 5: duplicate case id 'a' (first on line 2)"),
    ("case,fixed,moving\na,ct,mr\nb,ct\n", "cases.csv line 3: 2 fields, the header has 3"),
    ("case,fixed,moving\n../up,ct,mr\n", "cases.csv line 2: case id '../up' must start with a letter or digit"),
    ("case,fixed,moving\nx y,ct,mr\n", "cases.csv line 2: case id 'x y'"),
    ("case,fixed,moving\na,ct, \n", "cases.csv line 2: case 'a' has no moving image"),
])
def test_malformed_manifest_names_its_line(tmp_path, text, message):
    with pytest.raises(InputError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        read_manifest(manifest(tmp_path, text))


def test_every_optional_column_maps_to_a_ctmr_register_option(tmp_path):
    for older in (False, True):  # fixed_seg and moving_seg: the older names of the segmentation columns
        paths = [c for c in PATH_COLUMNS if c.endswith("_seg") == older or not c.endswith(("_seg", "_segmentation"))]
        values = ["a", *(f"{column}.nrrd" for column in paths), "rigid"]
        text = ",".join(("case", *paths, *VALUE_COLUMNS)) + "\n" + ",".join(values) + "\n"
        [case] = read_manifest(manifest(tmp_path, text))
        arguments = case.optional_arguments()
        fixed_column = "fixed_seg" if older else "fixed_segmentation"
        assert arguments[arguments.index("--fixed-segmentation") + 1] == str(tmp_path / f"{fixed_column}.nrrd")
        assert arguments.count("--moving-segmentation") == 1
        cli.check_columns_known(tmp_path / "cases.csv", [case])  # ctmr-register takes every one of them
    with pytest.raises(InputError, match="appear twice"):
        read_manifest(manifest(tmp_path, "case,fixed,moving,fixed_seg,fixed_segmentation\na,f,m,s,t\n"))


def test_command_exits_2_before_any_work(tmp_path, capsys):
    path = manifest(tmp_path, "case,fixed,moving\na,ct,mr\na,ct,mr\n")
    output = tmp_path / "out"
    assert main([str(path), "--output-dir", str(output)]) == EXIT_INPUT
    assert "cases.csv line 3: duplicate case id 'a'" in capsys.readouterr().err
    assert not output.exists()
    assert main([str(tmp_path / "absent.csv"), "--output-dir", str(output)]) == EXIT_INPUT
    assert "absent.csv not found" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--threads", "2"], "--threads is set per case by ctmr-batch and cannot be passed through (use --threads-per"),
    (["--output-volume=v.nrrd"], "--output-volume would write every case's output to one path"),
    (["--overlay", "o.png"], "--overlay would write every case's output to one path"),
    (["--registered-region", "r.mrk.json"], "--registered-region would write every case's output to one path"),
    (["--report-folder", "r"], "--report-folder is set per case by ctmr-batch and cannot be passed through"),
    (["--no-such-option"], "ctmr-register option: unrecognized arguments: --no-such-option"),
    (["--stages"], "ctmr-register option: argument --stages: expected one argument"),
])
def test_bad_pass_through_options_exit_2(tmp_path, capsys, options, message):
    path = manifest(tmp_path, "case,fixed,moving\na,ct,mr\n")
    assert main([str(path), "--output-dir", str(tmp_path / "out"), *options]) == EXIT_INPUT
    assert message in capsys.readouterr().err


def test_fingerprint_follows_content_and_options_not_timestamps(tmp_path):
    image = tmp_path / "mr.nii.gz"
    image.write_bytes(b"first")
    inputs = {"moving": image}
    base = case_fingerprint(["--stages", "rigid"], inputs)
    os.utime(image, (1, 1))
    assert case_fingerprint(["--stages", "rigid"], inputs) == base
    assert case_fingerprint(["--stages", "rigid,affine"], inputs) != base
    image.write_bytes(b"second")
    assert case_fingerprint(["--stages", "rigid"], inputs) != base
    assert content_digest(tmp_path / "absent.nii") == "missing"
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    (dicom / "1.dcm").write_bytes(b"slice")
    folder = content_digest(dicom)
    (dicom / "2.dcm").write_bytes(b"slice")
    assert content_digest(dicom) != folder


def test_manifest_column_changes_only_its_case(tmp_path):
    (tmp_path / "mr.nii").write_bytes(b"mr")
    before = read_manifest(manifest(tmp_path, "case,fixed,moving,stages\na,ct,mr.nii,\nb,ct,mr.nii,\n"))
    after = read_manifest(manifest(tmp_path, "case,fixed,moving,stages\na,ct,mr.nii,\nb,ct,mr.nii,rigid,affine\n"
                                   .replace("rigid,affine", '"rigid,affine"')))
    options = ["--initialization", "center"]
    jobs = [[case_job(case, tmp_path / "out", options, 1) for case in cases] for cases in (before, after)]
    assert jobs[0][0].fingerprint == jobs[1][0].fingerprint
    assert jobs[0][1].fingerprint != jobs[1][1].fingerprint
    arguments = jobs[1][1].arguments
    assert arguments[:2] == tuple(options) and arguments[-2:] == ("--stages", "rigid,affine")
    assert case_job(before[0], tmp_path / "out", options, 2).fingerprint != jobs[0][0].fingerprint


def test_column_whose_option_ctmr_register_lacks_is_refused_with_its_line(tmp_path, capsys, monkeypatch):
    def older_register_parser() -> argparse.ArgumentParser:  # a ctmr-register without --stages
        parser = argparse.ArgumentParser(prog="ctmr-register")
        for option in ("--fixed", "--moving", "--output-transform"):
            parser.add_argument(option)
        return parser

    monkeypatch.setattr(cli.register_cli, "build_parser", older_register_parser)
    path = manifest(tmp_path, "case,fixed,moving,stages\na,ct,mr,\nb,ct,mr,rigid\n")
    assert main([str(path), "--output-dir", str(tmp_path / "out")]) == EXIT_INPUT
    assert "cases.csv line 3: ctmr-register option: unrecognized arguments: --stages rigid" in capsys.readouterr().err
