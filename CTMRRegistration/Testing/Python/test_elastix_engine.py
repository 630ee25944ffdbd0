"""The elastix engine on the bundled pair: stages, both backends, presets, transforms into MRML and elastix."""

import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import move_header, rigid_pose

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.apps.register_cli import main
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.errors import InputError
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, transform_points
from CTMRRegistrationLib.core.imaging import resample_on_grid
from CTMRRegistrationLib.core.masks import ct_body_mask, foreground_mask
from CTMRRegistrationLib.elastix.backends import WheelBackend, choose_backend
from CTMRRegistrationLib.elastix.parameters import ElastixJob, read_parameter_file, write_parameter_file
from CTMRRegistrationLib.elastix.transforms import (
    is_linear,
    linear_transform_map,
    sitk_from_transform_map,
    write_elastix_transform,
)
from CTMRRegistrationLib.mrml.transform_nodes import inverse_transform_node, new_transform_node

pytestmark = pytest.mark.slow  # real registrations of the bundled pair

needs_executable = pytest.mark.skipif(shutil.which("elastix") is None, reason="no elastix executable on PATH")


@pytest.fixture(scope="module")
def deformable_run(tmp_path_factory):
    """ctmr-register --stages rigid,affine,deformable on the bundled pair, with every transform output. These
    tests check mechanics (outputs, inverse, export), not accuracy: a lighter deformable preset saves time."""
    folder = tmp_path_factory.mktemp("deformable")
    light = read_parameter_file(resources.parameter_file("Deformable"))
    light |= {"NumberOfSpatialSamples": ["2000"], "MaximumNumberOfIterations": ["100"]}
    code = main([
        "--fixed", str(resources.sample_ct_path()), "--moving", str(resources.sample_mr_path()),
        "--stages", "rigid,affine,deformable", "--threads", "2",
        "--preset", str(write_parameter_file(light, folder / "light_deformable.txt")),
        "--output-transform", str(folder / "forward.h5"), "--output-inverse-transform", str(folder / "inverse.h5"),
        "--output-elastix-transform", str(folder / "elastix" / "TransformParameters.txt"),
        "--output-stage-transforms", str(folder / "stages"),
    ])
    assert code == 0
    return folder


def test_deformable_result_is_smooth_and_close_to_the_linear_one(deformable_run, sample_ct, ct_object_points,
                                                                  reference_ct_to_mr):
    forward = sitk.ReadTransform(str(deformable_run / "forward.h5"))
    assert forward.GetTransformEnum() == sitk.sitkComposite
    field = sitk.TransformToDisplacementField(forward, sitk.sitkVectorFloat64, sample_ct.GetSize(),
                                              sample_ct.GetOrigin(), sample_ct.GetSpacing(), sample_ct.GetDirection())
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
    inside = sitk.GetArrayFromImage(ct_body_mask(sample_ct)) > 0
    assert jacobian[inside].min() > 0.2, "the deformation folds inside the object"
    mapped = np.array([forward.TransformPoint(p.tolist()) for p in ct_object_points])
    distances = np.linalg.norm(mapped - transform_points(reference_ct_to_mr, ct_object_points), axis=1)
    # the phantom deformed by a few mm and the reference is a rigid MI optimum ~4 mm from the anatomy:
    # a deformable result stays within that order, a runaway B-spline would not
    assert np.median(distances) < 6.0 and np.percentile(distances, 95) < 15.0


def test_each_stage_result_is_written_and_the_result_is_one_of_them(deformable_run, ct_object_points):
    stages = {path.stem: sitk.ReadTransform(str(path)) for path in (deformable_run / "stages").iterdir()}
    assert stages.keys() == {"rigid", "affine", "deformable"}
    rotation = matrix_from_sitk(stages["rigid"])[:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
    assert abs(np.linalg.det(matrix_from_sitk(stages["affine"])[:3, :3]) - 1.0) > 1e-4
    assert not is_linear(stages["deformable"])
    forward = sitk.ReadTransform(str(deformable_run / "forward.h5"))
    result = np.array([forward.TransformPoint(p.tolist()) for p in ct_object_points])
    matching = [name for name, transform in stages.items()
                if np.allclose([transform.TransformPoint(p.tolist()) for p in ct_object_points], result, atol=0.01)]
    assert len(matching) == 1, "the result is the last stage the guard kept"


def test_inverse_of_the_deformable_result_undoes_it(deformable_run, ct_object_points):
    forward = sitk.ReadTransform(str(deformable_run / "forward.h5"))
    inverse = sitk.ReadTransform(str(deformable_run / "inverse.h5"))
    round_trip = np.array([inverse.TransformPoint(forward.TransformPoint(p.tolist())) for p in ct_object_points])
    assert np.percentile(np.linalg.norm(round_trip - ct_object_points, axis=1), 95) < 0.5


@needs_executable
def test_elastix_export_of_a_deformable_result_matches_transformix(deformable_run, sample_ct, tmp_path):
    forward = sitk.ReadTransform(str(deformable_run / "forward.h5"))
    subprocess.run(["transformix", "-def", "all", "-tp", str(deformable_run / "elastix" / "TransformParameters.txt"),
                    "-out", str(tmp_path)], check=True, capture_output=True)
    field = sitk.ReadImage(str(next(p for p in tmp_path.glob("deformationField.*") if p.suffix != ".raw")))
    ours = sitk.TransformToDisplacementField(forward, sitk.sitkVectorFloat64, field.GetSize(), field.GetOrigin(),
                                             field.GetSpacing(), field.GetDirection())
    difference = np.linalg.norm(sitk.GetArrayFromImage(field) - sitk.GetArrayFromImage(ours), axis=-1)
    inside = sitk.GetArrayFromImage(ct_body_mask(sample_ct)) > 0
    assert difference[inside].max() < 1e-3


@needs_executable
def test_exported_linear_transform_resamples_like_simpleitk_in_transformix(sample_ct, sample_mr, reference_ct_to_mr,
                                                                            tmp_path):
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(reference_ct_to_mr[:3, :3].ravel().tolist())
    transform.SetTranslation(reference_ct_to_mr[:3, 3].tolist())
    files = write_elastix_transform(transform, sample_ct, tmp_path / "TransformParameters.txt")
    sitk.WriteImage(sitk.Cast(sample_mr, sitk.sitkFloat32), str(tmp_path / "mr.mha"))
    subprocess.run(["transformix", "-tp", str(files[-1]), "-in", str(tmp_path / "mr.mha"), "-out", str(tmp_path)],
                   check=True, capture_output=True)
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "result.nrrd")))
    ours = sitk.GetArrayFromImage(resample_on_grid(sample_mr, sample_ct, transform))
    interior = np.zeros(sitk.GetArrayViewFromImage(sample_mr).shape, np.uint8)
    interior[1:-1, 1:-1, 1:-1] = 1  # on the outermost voxels the two programs' edge rules differ
    mr_interior = sitk.GetImageFromArray(interior)
    mr_interior.CopyInformation(sample_mr)
    in_view = sitk.Resample(mr_interior, sample_ct, transform, sitk.sitkNearestNeighbor, 0)
    inside = (sitk.GetArrayFromImage(ct_body_mask(sample_ct)) > 0) & (sitk.GetArrayViewFromImage(in_view) > 0)
    intensity_range = np.ptp(sitk.GetArrayViewFromImage(sample_mr))
    assert np.abs(theirs - ours)[inside].max() < 1e-3 * intensity_range


@needs_executable
def test_both_backends_agree_on_the_rigid_stage(sample_ct, sample_mr, reference_ct_to_mr, ct_object_points):
    fixed, moving = (sitk.Cast(image, sitk.sitkFloat32) for image in (sample_ct, sample_mr))
    start = rigid_pose((3.0, -2.0, 4.0), (4.0, -3.0, 5.0)) @ reference_ct_to_mr
    job = ElastixJob(fixed, moving, [read_parameter_file(resources.parameter_file("Rigid"))],
                     initial_transform_map=linear_transform_map(start, fixed),
                     fixed_mask=foreground_mask(fixed, "CT"), moving_mask=foreground_mask(moving, "MR"), threads=2)
    results = {}
    for backend in ("elastix", "itk-elastix"):
        stage = matrix_from_sitk(sitk_from_transform_map(choose_backend(backend).run(job)[0]))
        results[backend] = transform_points(stage @ start, ct_object_points)
    agreement = np.linalg.norm(results["elastix"] - results["itk-elastix"], axis=1)
    assert np.percentile(agreement, 95) < 0.5


def test_mr_fixed_affine_run_is_the_inverse_of_ct_fixed(sample_ct, sample_mr, ct_object_points):
    options = RegistrationOptions(stages=("rigid", "affine"), threads=2, force_stages=True)  # past the stage guard
    messages = []
    ct_fixed = register_images(sample_ct, sample_mr, options, progress=lambda _, message: messages.append(message))
    mr_fixed = register_images(sample_mr, sample_ct, options)
    assert not ct_fixed.deformable and ct_fixed.stage_seconds.keys() >= {"rigid", "affine"}
    # the 1 mm images and their tissue bias field are announced before elastix reports on the affine stage
    start = messages.index("affine registration: preparing the 1 mm images")
    assert messages[start + 1] == "affine registration (elastix)"
    assert abs(np.linalg.det(ct_fixed.matrix[:3, :3]) - 1.0) > 1e-4  # affine, not rigid
    round_trip = transform_points(mr_fixed.matrix @ ct_fixed.matrix, ct_object_points)
    assert np.percentile(np.linalg.norm(round_trip - ct_object_points, axis=1), 95) < 2.0
    # each stage's own result, in the requested direction (the MR-fixed run registered CT-fixed and inverted)
    for result in (ct_fixed, mr_fixed):
        assert result.metrics["stage_guard"]["affine"]["forced"] is True
        np.testing.assert_allclose(matrix_from_sitk(result.stage_transforms["affine"]), result.matrix, atol=1e-9)
        assert is_linear(result.stage_transforms["rigid"])


def test_presets_are_checked_before_registering(sample_ct, sample_mr, tmp_path):
    with pytest.raises(InputError, match="in that order"):
        register_images(sample_ct, sample_mr, RegistrationOptions(stages=("affine", "rigid")))
    with pytest.raises(InputError, match="elastix parameter file not found"):
        register_images(sample_ct, sample_mr, RegistrationOptions(presets=[tmp_path / "missing.txt"]))
    affine = write_parameter_file(read_parameter_file(resources.parameter_file("Affine")), tmp_path / "my.txt")
    with pytest.raises(InputError, match="affine stage, which is not among"):
        register_images(sample_ct, sample_mr, RegistrationOptions(presets=[affine]))


def test_a_user_preset_replaces_the_bundled_one(sample_ct, sample_mr, tmp_path):
    """A rigid preset with one iteration per level leaves the pose where the initialisation put it."""
    parameters = read_parameter_file(resources.parameter_file("Rigid")) | {"MaximumNumberOfIterations": ["1", "1"]}
    preset = write_parameter_file(parameters, tmp_path / "one_iteration.txt")
    moved = move_header(sample_mr, rigid_pose((0.0, 0.0, 0.0), (5.0, 0.0, 0.0)))
    options = RegistrationOptions(initialization="none", presets=[preset], threads=2, bias_correction="off")
    result = register_images(sample_ct, moved, options)
    unchanged = register_images(sample_ct, moved, RegistrationOptions(initialization="none", threads=2,
                                                                      bias_correction="off"))
    assert np.abs(result.matrix - np.eye(4))[:3, 3].max() < 1.0
    assert np.abs(unchanged.matrix - np.eye(4))[:3, 3].max() > 1.0


def test_backend_choice_errors(monkeypatch, tmp_path):
    with pytest.raises(InputError, match="unknown elastix backend"):
        choose_backend("ants")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CTMR_ELASTIX", raising=False)
    with pytest.raises(InputError, match="no elastix executable found"):
        choose_backend("elastix")
    assert isinstance(choose_backend("auto"), WheelBackend)


def test_transform_nodes_hold_the_deformable_result_and_its_inverse(context, deformable_run, ct_object_points):
    forward = sitk.ReadTransform(str(deformable_run / "forward.h5"))
    node = new_transform_node(context, forward, "result")
    assert not node.IsLinear()
    inverse = inverse_transform_node(context, node)
    for point in ct_object_points[::400]:
        ras = [-point[0], -point[1], point[2]]
        moved = node.GetTransformFromParent().TransformPoint(ras)
        expected = forward.TransformPoint(point.tolist())
        np.testing.assert_allclose([-moved[0], -moved[1], moved[2]], expected, atol=1e-4)
        back = inverse.GetTransformFromParent().TransformPoint(moved)
        np.testing.assert_allclose(back, ras, atol=0.05)
