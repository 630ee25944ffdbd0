"""DICOM Spatial Registration out and in: dciodvfy finds no error, every reference points at the series' real
instances, the matrix is the inverse of the fixed->moving transform (as plastimatch writes it from the same ITK
transform), reading gives the transform back; the Deformable REG round trip."""

import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import rigid_pose
from dicom_samples import sop_instance_uids, write_series
from scipy.ndimage import map_coordinates

from CTMRRegistrationLib.apps.register_cli import EXIT_INPUT, main
from CTMRRegistrationLib.core.errors import InputError
from CTMRRegistrationLib.core.geometry import sitk_from_matrix, transform_points
from CTMRRegistrationLib.dicom.inputs import read_initial_matrix
from CTMRRegistrationLib.dicom.registration_objects import read_registration_object, write_registration_object
from CTMRRegistrationLib.dicom.series import load_series
from CTMRRegistrationLib.dicom.spatial_registration import read_spatial_registration

POSE = rigid_pose((6.0, -4.0, 12.0), (5.0, -8.0, 14.0), centre=(10.0, 20.0, 30.0))  # fixed -> moving


def image(size, spacing, origin) -> sitk.Image:
    array = np.random.default_rng(2).integers(-900, 900, size[::-1]).astype(np.int16)
    result = sitk.GetImageFromArray(array)
    result.SetSpacing(spacing)
    result.SetOrigin(origin)
    return result


@pytest.fixture
def series_pair(tmp_path):
    """(fixed CT, moving MR) series of two studies with their own frames of reference, and their files."""
    ct_files = write_series(image((16, 14, 9), (1.2, 1.2, 3.0), (-10.0, 5.0, 20.0)), tmp_path / "ct", "CT")
    mr_files = write_series(image((12, 12, 7), (1.5, 1.5, 4.0), (-4.0, 0.0, 25.0)), tmp_path / "mr", "MR")
    return load_series(tmp_path / "ct")[1], load_series(tmp_path / "mr")[1], ct_files, mr_files


def points() -> np.ndarray:
    return np.random.default_rng(3).uniform(-80, 80, (200, 3))


def dciodvfy_errors(path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) not installed")
    completed = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (completed.stdout + completed.stderr).splitlines() if line.startswith("Error")]


def moving_matrix(dataset, moving_frame: str) -> np.ndarray:
    [item] = [i for i in dataset.RegistrationSequence if i.FrameOfReferenceUID == moving_frame]
    values = item.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix
    return np.asarray([float(v) for v in values]).reshape(4, 4)


def test_reg_is_valid_references_every_instance_and_holds_the_inverse(tmp_path, series_pair):
    fixed, moving, ct_files, mr_files = series_pair
    path = write_registration_object(tmp_path / "reg.dcm", sitk_from_matrix(POSE), fixed, moving)
    assert dciodvfy_errors(path) == []
    reg = pydicom.dcmread(path)
    ct, mr = (pydicom.dcmread(files[0], stop_before_pixels=True) for files in (ct_files, mr_files))
    assert (reg.SOPClassUID, reg.Modality) == ("1.2.840.10008.5.1.4.1.1.66.1", "REG")
    assert (reg.StudyInstanceUID, reg.PatientID, reg.FrameOfReferenceUID) == \
        (ct.StudyInstanceUID, ct.PatientID, ct.FrameOfReferenceUID)
    items = {str(i.FrameOfReferenceUID): i for i in reg.RegistrationSequence}
    assert set(items) == {ct.FrameOfReferenceUID, mr.FrameOfReferenceUID}
    for frame, files, header in ((ct.FrameOfReferenceUID, ct_files, ct), (mr.FrameOfReferenceUID, mr_files, mr)):
        references = items[frame].ReferencedImageSequence
        assert {str(r.ReferencedSOPInstanceUID) for r in references} == sop_instance_uids(files)
        assert {str(r.ReferencedSOPClassUID) for r in references} == {str(header.SOPClassUID)}
    assert [str(s.SeriesInstanceUID) for s in reg.ReferencedSeriesSequence] == [ct.SeriesInstanceUID]
    [other_study] = reg.StudiesContainingOtherReferencedInstancesSequence
    assert other_study.StudyInstanceUID == mr.StudyInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in other_study.ReferencedSeriesSequence[0]
            .ReferencedInstanceSequence} == sop_instance_uids(mr_files)
    matrix = moving_matrix(reg, mr.FrameOfReferenceUID)  # moving patient -> fixed patient coordinates
    fixed_points = points()
    assert np.abs(transform_points(matrix, transform_points(POSE, fixed_points)) - fixed_points).max() < 0.01
    np.testing.assert_allclose(read_spatial_registration(path), POSE, atol=1e-9)
    np.testing.assert_allclose(read_initial_matrix(path, moving), POSE, atol=1e-9)


def test_plastimatch_writes_the_same_matrix_and_we_read_its_reg(tmp_path, series_pair):
    if shutil.which("plastimatch") is None:
        pytest.skip("plastimatch not installed")
    fixed, moving, ct_files, mr_files = series_pair
    ours = pydicom.dcmread(write_registration_object(tmp_path / "reg.dcm", sitk_from_matrix(POSE), fixed, moving))
    sitk.WriteTransform(sitk_from_matrix(POSE), str(tmp_path / "pose.tfm"))
    subprocess.run(["plastimatch", "xf-convert", "--input", str(tmp_path / "pose.tfm"), "--output-dicom",
                    str(tmp_path / "plastimatch"), "--fixed-rcs", str(ct_files[0].parent), "--moving-rcs",
                    str(mr_files[0].parent)], check=True, capture_output=True)
    [theirs_path] = list((tmp_path / "plastimatch").glob("*.dcm"))
    theirs = pydicom.dcmread(theirs_path)
    fixed_points = points()
    ours_mapped, theirs_mapped = (transform_points(moving_matrix(reg, moving.frame_of_reference_uid), fixed_points)
                                  for reg in (ours, theirs))
    assert np.abs(ours_mapped - theirs_mapped).max() < 0.01
    assert np.abs(transform_points(read_spatial_registration(theirs_path, moving), fixed_points)
                  - transform_points(POSE, fixed_points)).max() < 0.01


def test_itk_file_as_initial_transform(tmp_path):
    sitk.WriteTransform(sitk_from_matrix(POSE), str(tmp_path / "pose.h5"))
    np.testing.assert_allclose(read_initial_matrix(tmp_path / "pose.h5"), POSE, atol=1e-9)
    bspline = sitk.BSplineTransformInitializer(image((8, 8, 8), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0)), [3, 3, 3])
    sitk.WriteTransform(bspline, str(tmp_path / "bspline.h5"))
    with pytest.raises(InputError, match="not linear"):
        read_initial_matrix(tmp_path / "bspline.h5")


def test_reg_needs_dicom_inputs(tmp_path, capsys):
    with pytest.raises(InputError, match="needs DICOM series"):
        write_registration_object(tmp_path / "reg.dcm", sitk_from_matrix(POSE), None, None)
    volume = image((8, 8, 8), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    sitk.WriteImage(volume, str(tmp_path / "v.nrrd"))
    code = main(["--fixed", str(tmp_path / "v.nrrd"), "--moving", str(tmp_path / "v.nrrd"), "--output-transform",
                 str(tmp_path / "t.h5"), "--output-dicom-reg", str(tmp_path / "reg.dcm")])
    assert code == EXIT_INPUT and "--output-dicom-reg needs DICOM series" in capsys.readouterr().err


def deformable_pose(reference: sitk.Image) -> sitk.Transform:
    """An affine fixed->moving transform after a smooth B-spline deformation of up to about 4 mm."""
    bspline = sitk.BSplineTransformInitializer(reference, [4, 4, 4])
    coefficients = np.random.default_rng(4).uniform(-4.0, 4.0, len(bspline.GetParameters()))
    bspline.SetParameters(coefficients.tolist())
    affine = rigid_pose((3.0, -2.0, 5.0), (4.0, 2.0, -6.0), centre=(40.0, 40.0, 30.0))
    affine[:3, :3] *= 1.03
    return sitk.CompositeTransform([sitk_from_matrix(affine), bspline])


def moving_to_fixed_by_hand(item, moving_points: np.ndarray) -> np.ndarray:
    """PS3.3 C.20.3 read directly: pre-deformation matrix, plus the grid's vector (trilinear), then post matrix."""
    pre, post = (np.asarray([float(v) for v in item[key][0].FrameOfReferenceTransformationMatrix]).reshape(4, 4)
                 for key in ("PreDeformationMatrixRegistrationSequence", "PostDeformationMatrixRegistrationSequence"))
    grid = item.DeformableRegistrationGridSequence[0]
    size = [int(v) for v in grid.GridDimensions]
    vectors = np.frombuffer(grid.VectorGridData, "<f4").reshape(size[2], size[1], size[0], 3)
    points = transform_points(pre, moving_points)
    index = (points - np.asarray([float(v) for v in grid.ImagePositionPatient])) / [float(v) for v in
                                                                                  grid.GridResolution]
    displacement = np.column_stack([map_coordinates(vectors[..., axis], index[:, ::-1].T, order=1)
                                    for axis in range(3)])
    return transform_points(post, points + displacement)


def test_deformable_reg_round_trip(tmp_path, series_pair):
    fixed, moving, _, _ = series_pair
    reference = image((40, 40, 30), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    transform = deformable_pose(reference)
    path = write_registration_object(tmp_path / "dreg.dcm", transform, fixed, moving, reference)
    assert dciodvfy_errors(path) == []
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.3"
    [deformation] = [i for i in dataset.DeformableRegistrationSequence if "DeformableRegistrationGridSequence" in i]
    assert deformation.SourceFrameOfReferenceUID == moving.frame_of_reference_uid
    inside = np.random.default_rng(5).uniform(8.0, 70.0, (300, 3)) * [1, 1, 0.7]  # away from the grid's borders
    mapped = np.array([transform.TransformPoint(p.tolist()) for p in inside])  # moving points
    assert np.abs(moving_to_fixed_by_hand(deformation, mapped) - inside).max() < 0.5
    back = read_registration_object(path, moving)
    errors = [np.linalg.norm(np.subtract(back.TransformPoint(p.tolist()), transform.TransformPoint(p.tolist())))
              for p in inside]
    moved = [np.linalg.norm(np.subtract(transform.TransformPoint(p.tolist()), p)) for p in inside]
    assert max(errors) < 0.5 and min(moved) > 2.0  # the transform moves every point, the round trip keeps it


def test_export_between_volumes_of_slicers_dicom_module(tmp_path, series_pair, context, monkeypatch):
    """In Slicer the volumes carry only DICOM.instanceUIDs; their files come from the DICOM database."""
    import slicer

    from CTMRRegistrationLib.mrml.dicom_nodes import export_dicom_registration
    from CTMRRegistrationLib.mrml.nodes import add_volume_from_sitk

    fixed, moving, ct_files, mr_files = series_pair
    files = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): str(p) for p in ct_files + mr_files}
    database = SimpleNamespace(isOpen=True, fileForInstance=lambda uid: files.get(uid, ""))
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    nodes = []
    for series in (fixed, moving):
        node = add_volume_from_sitk(context, load_series(series.files[0].parent)[0], series.modality)
        node.SetAttribute("DICOM.instanceUIDs", " ".join(reversed(series.sop_instance_uids)))
        nodes.append(node)
    result = SimpleNamespace(transform=sitk_from_matrix(POSE), verdict="ok")
    path = export_dicom_registration(tmp_path / "reg.dcm", result, *nodes)
    np.testing.assert_allclose(read_spatial_registration(path, moving), POSE, atol=1e-9)
    plain = add_volume_from_sitk(context, load_series(fixed.files[0].parent)[0], "from a file")
    with pytest.raises(InputError, match="not loaded through the DICOM database"):
        export_dicom_registration(tmp_path / "reg2.dcm", result, plain, nodes[1])


def test_a_failed_result_needs_an_explicit_choice_and_says_so(tmp_path, series_pair):
    """A planning system imports a REG as it is: one of a failed result is written only when asked for, and
    carries the verdict in its descriptions; every REG names its verdict."""
    fixed, moving, _, _ = series_pair
    with pytest.raises(InputError, match="the quality verdict is failed"):
        write_registration_object(tmp_path / "reg.dcm", sitk_from_matrix(POSE), fixed, moving, verdict="failed")
    assert not (tmp_path / "reg.dcm").exists()
    failed = pydicom.dcmread(write_registration_object(tmp_path / "reg.dcm", sitk_from_matrix(POSE), fixed, moving,
                                                       verdict="failed", allow_failed=True))
    assert failed.SeriesDescription.endswith("QA FAILED") and failed.ContentDescription.endswith("verdict: failed")
    assert dciodvfy_errors(tmp_path / "reg.dcm") == []
    ok = pydicom.dcmread(write_registration_object(tmp_path / "ok.dcm", sitk_from_matrix(POSE), fixed, moving,
                                                   verdict="ok"))
    assert "FAILED" not in ok.SeriesDescription and ok.ContentDescription.endswith("verdict: ok")
