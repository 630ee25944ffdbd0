"""The `ctmr-qa` contract: JSON with verdict, reasons and metrics; exit status by verdict; a report folder
with a self-contained HTML file holding the pictures; one-line errors for unusable input."""

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rigid_pose

from CTMRRegistrationLib.apps.qa_cli import EXIT_FAILED, EXIT_INPUT, EXIT_OK, main
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import sitk_from_matrix
from CTMRRegistrationLib.core.masks import ct_body_mask
from CTMRRegistrationLib.mrml.node_io import save_node
from CTMRRegistrationLib.mrml.nodes import add_volume_from_sitk, set_markups_from_points
from CTMRRegistrationLib.qa.pictures import KINDS


def run_cli(capsys, *args) -> tuple[int, dict]:
    code = main([str(a) for a in args] + ["--json", "--restarts", "0"])
    return code, json.loads(capsys.readouterr().out)


def write_transform(matrix, path) -> str:
    sitk.WriteTransform(sitk_from_matrix(matrix), str(path))
    return str(path)


def volumes() -> list[str]:
    return ["--fixed", resources.sample_ct_path(), "--moving", resources.sample_mr_path()]


@pytest.mark.slow
def test_reference_with_targets_segmentations_and_report(tmp_path, capsys, context, sample_ct, reference_ct_to_mr):
    fixed_points = np.array([[-10.0, 0.0, -5.0], [20.0, 10.0, 0.0], [0.0, -20.0, 15.0]])
    moving_points = fixed_points @ reference_ct_to_mr[:3, :3].T + reference_ct_to_mr[:3, 3]
    paths = {}
    for role, points in (("fixed", fixed_points), ("moving", moving_points)):
        node = context.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", role)
        set_markups_from_points(node, points)
        paths[role] = save_node(context, node, tmp_path / f"{role}_targets.mrk.json")
    body = sitk.Cast(ct_body_mask(sample_ct), sitk.sitkUInt8)
    moved_body = sitk.Resample(body, sample_ct, sitk_from_matrix(np.linalg.inv(reference_ct_to_mr)),
                               sitk.sitkNearestNeighbor, 0)
    for role, image in (("fixed", body), ("moving", moved_body)):
        save_node(context, add_volume_from_sitk(context, image, role, labelmap=True), tmp_path / f"{role}_seg.nrrd")
    code, report = run_cli(capsys, *volumes(), "--transform", write_transform(reference_ct_to_mr, tmp_path / "t.tfm"),
                           "--fixed-targets", paths["fixed"], "--moving-targets", paths["moving"],
                           "--fixed-segmentation", tmp_path / "fixed_seg.nrrd",
                           "--moving-segmentation", tmp_path / "moving_seg.nrrd",
                           "--report-folder", tmp_path / "report")
    assert code == EXIT_OK and report["verdict"] == "ok" and report["reasons"] == []
    metrics = report["metrics"]
    assert metrics["targets"]["after"]["tre_max_mm"] < 1e-3 and metrics["segmentations"]["after"]["1"]["dice"] > 0.95
    assert metrics["edge_alignment"] > 1.8
    page = (tmp_path / "report" / "report.html").read_text()
    assert report["outputs"]["report"] == str(tmp_path / "report" / "report.html")
    assert len(re.findall(r"src=\"data:image/png;base64,", page)) == 2 * len(KINDS)
    assert "edge_alignment" in page and ">ok<" in page and "SimpleITK" in page
    for kind in KINDS:
        picture = sitk.ReadImage(str(tmp_path / "report" / f"after_{kind}.png"))
        assert picture.GetNumberOfComponentsPerPixel() == 3 and picture.GetWidth() > 300


def test_wrong_transform_fails(tmp_path, capsys, reference_ct_to_mr):
    wrong = reference_ct_to_mr @ rigid_pose((10.0, -8.0, 6.0), (12.0, -10.0, 12.0), (-15.0, 5.0, -9.0))
    code, report = run_cli(capsys, *volumes(), "--transform", write_transform(wrong, tmp_path / "wrong.h5"))
    assert code == EXIT_FAILED and report["verdict"] == "failed" and report["reasons"]


def test_unusable_input(tmp_path, capsys, reference_ct_to_mr):
    code, report = run_cli(capsys, *volumes(), "--transform", tmp_path / "missing.h5")
    assert code == EXIT_INPUT and report["verdict"] == "error" and "not found" in report["error"]
    transform = write_transform(reference_ct_to_mr, tmp_path / "t.tfm")
    code, report = run_cli(capsys, *volumes(), "--transform", transform, "--fixed-targets", transform)
    assert code == EXIT_INPUT and "give both" in report["error"]
    (tmp_path / "garbage.tfm").write_text("not a transform")
    code, report = run_cli(capsys, *volumes(), "--transform", tmp_path / "garbage.tfm")
    assert code == EXIT_INPUT and "cannot read transform" in report["error"]
