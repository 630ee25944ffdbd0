"""Registration with landmarks and quality assessment wired in: the landmark start pose from files, the
verdict and ground-truth metrics on every result, the report, re-registering into the same node, and one
node for a chain of transforms."""

import json

import numpy as np
import pytest
import vtk
from conftest import move_header, p95_distance, rigid_pose

from CTMRRegistrationLib.apps.register_cli import EXIT_FAILED, main
from CTMRRegistrationLib.core.geometry import transform_points
from CTMRRegistrationLib.core.resources import parameter_file
from CTMRRegistrationLib.elastix.parameters import read_parameter_file, write_parameter_file
from CTMRRegistrationLib.mrml.node_io import save_node
from CTMRRegistrationLib.mrml.nodes import add_volume_from_sitk, set_markups_from_points, vtk_matrix_from_numpy
from CTMRRegistrationLib.mrml.transform_nodes import (
    flatten_transform_chain,
    new_transform_node,
)

pytestmark = pytest.mark.slow  # real registrations of the bundled pair


def markups_node(context, name, points, labels):
    node = context.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    set_markups_from_points(node, points, labels)
    return node


def write_markups(context, path, points, labels=None):
    labels = labels or [f"P{i}" for i in range(len(points))]
    return str(save_node(context, markups_node(context, path.stem, points, labels), path))


def run_cli(capsys, *args) -> tuple[int, dict]:
    code = main([str(a) for a in args] + ["--json", "--threads", "2"])
    return code, json.loads(capsys.readouterr().out)


def test_landmarks_from_a_180_degree_pose_with_targets_and_report(tmp_path, capsys, context, sample_ct, sample_mr,
                                                                  reference_ct_to_mr, ct_object_points):
    """Six landmarks (2 mm noise, moving list in another order) start elastix; independent targets give TRE."""
    centre = np.asarray(sample_mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in sample_mr.GetSize()]))
    pose = rigid_pose((0.0, 180.0, 10.0), (-20.0, 15.0, 10.0), centre=centre)
    expected = pose @ reference_ct_to_mr
    save_node(context, add_volume_from_sitk(context, move_header(sample_mr, pose), "MR"), tmp_path / "mr.nrrd")
    save_node(context, add_volume_from_sitk(context, sample_ct, "CT"), tmp_path / "ct.nrrd")
    landmarks, targets = ct_object_points[::500][:6], ct_object_points[1::500][:5]
    moved = transform_points(expected, landmarks) + np.random.default_rng(3).normal(0, 2.0, landmarks.shape)
    labels = [f"L{i}" for i in range(6)]
    code, report = run_cli(
        capsys, "--fixed", tmp_path / "ct.nrrd", "--moving", tmp_path / "mr.nrrd",
        "--output-transform", tmp_path / "t.h5", "--report-folder", tmp_path / "report",
        "--fixed-landmarks", write_markups(context, tmp_path / "fixed.mrk.json", landmarks, labels),
        "--moving-landmarks", write_markups(context, tmp_path / "moving.mrk.json", moved[::-1], labels[::-1]),
        "--fixed-targets", write_markups(context, tmp_path / "fixed_targets.mrk.json", targets),
        "--moving-targets", write_markups(context, tmp_path / "moving_targets.mrk.json",
                                          transform_points(expected, targets)),
    )
    assert code == 0 and report["status"] == "ok" and report["verdict"] == "ok"
    assert p95_distance(np.asarray(report["transform"]), expected, ct_object_points) < 5.0
    initialization = report["metrics"]["initialization"]
    assert initialization["method"] == "landmarks" and 1.0 < initialization["fre_rms_mm"] < 5.0
    assert any("paired with the fixed ones by label" in warning for warning in report["warnings"])
    tre = report["qa"]["metrics"]["targets"]
    assert tre["after"]["tre_max_mm"] < 6.0 and tre["before"]["tre_mean_mm"] > 20.0
    page = (tmp_path / "report" / "report.html").read_text()
    assert report["outputs"]["report"] == str(tmp_path / "report" / "report.html") and "tre_max_mm" in page


def test_a_registration_left_wrong_is_flagged_failed(tmp_path, capsys, context, reference_ct_to_mr):
    """Landmarks put the start 10-12 degrees and 20 mm off, a one-iteration preset keeps it there."""
    wrong = reference_ct_to_mr @ rigid_pose((10.0, -8.0, 6.0), (12.0, -10.0, 12.0), (-15.0, 5.0, -9.0))
    landmarks = np.array([[-60.0, -20, -15], [55, -25, 10], [5, 45, -20], [-10, 5, 30]])
    one_iteration = read_parameter_file(parameter_file("Rigid")) | {"MaximumNumberOfIterations": ["1", "1"]}
    code, report = run_cli(
        capsys, "--demo", "--output-dir", tmp_path, "--preset",
        write_parameter_file(one_iteration, tmp_path / "one_iteration.txt"),
        "--fixed-landmarks", write_markups(context, tmp_path / "fixed.mrk.json", landmarks),
        "--moving-landmarks", write_markups(context, tmp_path / "moving.mrk.json", transform_points(wrong, landmarks)),
    )
    assert code == EXIT_FAILED and report["status"] == "ok" and report["verdict"] == "failed"
    assert report["qa"]["reasons"] and (tmp_path / "transform_fixedCT_to_movingMR.h5").is_file()


def _world_positions(node, points_ras: np.ndarray) -> np.ndarray:
    transform = vtk.vtkGeneralTransform()
    node.GetTransformToWorld(transform)
    return np.array([transform.TransformPoint(point) for point in points_ras])


def test_a_chain_of_transforms_flattens_into_one_node(context):
    """A landmark (linear) transform under a deformable result: one composite node moves points the same."""
    import SimpleITK as sitk

    domain = sitk.Image([40, 40, 40], sitk.sitkFloat32)
    domain.SetOrigin([-20.0] * 3)
    bspline = sitk.BSplineTransformInitializer(domain, [4, 4, 4])
    bspline.SetParameters(np.random.default_rng(1).normal(0, 3.0, len(bspline.GetParameters())).tolist())
    outer = new_transform_node(context, bspline, "deformable")
    inner = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "landmarks")
    inner.SetMatrixTransformToParent(vtk_matrix_from_numpy(rigid_pose((0.0, 0.0, 20.0), (5.0, -3.0, 2.0))))
    inner.SetAndObserveTransformNodeID(outer.GetID())
    points = np.random.default_rng(2).uniform(-12.0, 12.0, (50, 3))
    flat = flatten_transform_chain(context, inner)
    assert flat.GetParentTransformNode() is None and not flat.IsLinear()
    np.testing.assert_allclose(_world_positions(flat, points), _world_positions(inner, points), atol=1e-3)

    top = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "top")
    top.SetMatrixTransformToParent(vtk_matrix_from_numpy(rigid_pose((10.0, 0.0, 0.0), (0.0, 7.0, 0.0))))
    lower = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "lower")
    lower.SetMatrixTransformToParent(vtk_matrix_from_numpy(rigid_pose((0.0, 15.0, 0.0), (1.0, 2.0, 3.0))))
    lower.SetAndObserveTransformNodeID(top.GetID())
    flat = flatten_transform_chain(context, lower)
    assert flat.IsA("vtkMRMLLinearTransformNode")
    np.testing.assert_allclose(_world_positions(flat, points), _world_positions(lower, points), atol=1e-6)
