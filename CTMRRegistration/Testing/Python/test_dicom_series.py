"""DICOM series in: discovery, choice among several series, geometry checks with one-line errors, reading as
the NIfTI of the same series, modality from (0008,0060) on nodes, and the CLI's folder inputs."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import p95_distance
from dicom_samples import sts_thigh, write_series, write_slice

from CTMRRegistrationLib.apps.register_cli import EXIT_INPUT, main
from CTMRRegistrationLib.core.errors import InputError
from CTMRRegistrationLib.core.geometry import transform_points
from CTMRRegistrationLib.core.imaging import guess_modality
from CTMRRegistrationLib.dicom.inputs import read_dicom_input
from CTMRRegistrationLib.dicom.series import find_series, load_series
from CTMRRegistrationLib.mrml.dicom_nodes import load_dicom_volume, node_modality, tag_modality
from CTMRRegistrationLib.mrml.nodes import sitk_from_volume


def small_image(size=(12, 10, 8), spacing=(1.5, 1.5, 2.5), origin=(-9.0, 4.0, 30.0), direction=None) -> sitk.Image:
    array = np.random.default_rng(1).integers(-900, 900, size[::-1]).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def test_series_is_sorted_by_position_and_keeps_geometry_and_values(tmp_path):
    direction = sitk.VersorTransform((0.3, -0.2, 0.9), 0.5).GetMatrix()  # oblique slices
    image = small_image(direction=direction)
    write_series(image, tmp_path / "a", "CT", slices=[5, 2, 7, 0, 1, 6, 3, 4])  # files out of order
    read, series = load_series(tmp_path)
    assert series.size == (12, 10, 8) and series.modality == "CT"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)
    assert guess_modality(read) == "CT"


def test_two_series_in_one_folder_error_lists_them_and_a_uid_chooses(tmp_path):
    write_series(small_image(), tmp_path / "ct", "CT", series_uid="1.2.3.1", description="thigh CT")
    write_series(small_image(size=(9, 7, 5)), tmp_path / "mr", "MR", series_uid="1.2.3.2", description="T1 axial")
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError) as error:
        load_series(tmp_path, role="fixed")
    message = str(error.value)
    assert "\n" not in message and "--fixed-series" in message
    assert "1.2.3.1  CT  'thigh CT'  8 slices  12x10" in message
    assert "1.2.3.2  MR  'T1 axial'  5 slices  9x7" in message
    assert "SECRET-ID-42" not in message and "Patient" not in message
    image, series = load_series(tmp_path, "1.2.3.2")
    assert image.GetSize() == (9, 7, 5) and series.modality == "MR"
    with pytest.raises(InputError, match="no series 9.9.9"):
        load_series(tmp_path, "9.9.9")


def test_one_file_stands_for_its_series(tmp_path):
    write_series(small_image(), tmp_path, "CT", series_uid="1.2.3.1")
    write_series(small_image(size=(9, 7, 5)), tmp_path, "MR", series_uid="1.2.3.2")  # same folder, same names
    paths = write_series(small_image(size=(9, 7, 5)), tmp_path / "mr", "MR", series_uid="1.2.3.3")
    image, series = read_dicom_input(paths[2])
    assert series.series_uid == "1.2.3.3" and image.GetSize() == (9, 7, 5)


def broken(tmp_path, kind: str):
    image = small_image()
    folder = tmp_path / kind
    if kind == "missing slice":
        write_series(image, folder, "CT", slices=[0, 1, 2, 4, 5, 6, 7])
    elif kind == "duplicated position":
        paths = write_series(image, folder, "CT", series_uid="1.2.9")
        shutil.copy(paths[0], folder / "copy.dcm")
        import pydicom  # a second instance (new SOP Instance UID) at the first slice's position
        copy = pydicom.dcmread(folder / "copy.dcm")
        copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = "1.2.9.99"
        copy.save_as(folder / "copy.dcm")
    elif kind == "mixed sizes":
        paths = write_series(image, folder, "CT", series_uid="1.2.9")
        paths[3].unlink()
        write_slice(paths[3], np.zeros((6, 6), np.int16), image.TransformIndexToPhysicalPoint([0, 0, 3]),
                    np.eye(3), (1.5, 1.5), "CT", "1.2.9", "1.2", "1.3")
    elif kind == "gantry tilt":
        paths = write_series(image, folder, "CT", series_uid="1.2.9")
        for k, path in enumerate(paths):  # each slice shifted along y by 0.3 mm per mm of depth (about 17 degrees)
            paths[k].unlink()
            position = np.asarray(image.TransformIndexToPhysicalPoint([0, 0, k])) + [0, 0.3 * 2.5 * k, 0]
            write_slice(path, np.zeros((10, 12), np.int16), position, np.eye(3), (1.5, 1.5), "CT", "1.2.9", "1.2",
                        "1.3")
    elif kind == "irregular spacing":
        paths = write_series(image, folder, "CT", series_uid="1.2.9")
        paths[-1].unlink()
        position = np.asarray(image.TransformIndexToPhysicalPoint([0, 0, 7])) + [0, 0, 1.0]
        write_slice(paths[-1], np.zeros((10, 12), np.int16), position, np.eye(3), (1.5, 1.5), "CT", "1.2.9", "1.2",
                    "1.3")
    elif kind == "mixed orientations":
        paths = write_series(image, folder, "CT", series_uid="1.2.9")
        paths[2].unlink()
        tilted = np.asarray(sitk.VersorTransform((0, 0, 1), 0.2).GetMatrix()).reshape(3, 3)
        write_slice(paths[2], np.zeros((10, 12), np.int16), image.TransformIndexToPhysicalPoint([0, 0, 2]), tilted,
                    (1.5, 1.5), "CT", "1.2.9", "1.2", "1.3")
    return folder


@pytest.mark.parametrize("kind, words", [
    ("missing slice", "misses 1 slice(s) between"),
    ("duplicated position", "two slices at the same position"),
    ("mixed sizes", "mixes slice sizes"),
    ("gantry tilt", "gantry tilt"),
    ("irregular spacing", "irregular slice spacing"),
    ("mixed orientations", "mixes slice orientations"),
])
def test_broken_series_give_one_line_errors(tmp_path, capsys, kind, words):
    folder = broken(tmp_path, kind)
    with pytest.raises(InputError) as error:
        load_series(folder)
    assert words in str(error.value) and "\n" not in str(error.value)
    code = main(["--fixed", str(folder), "--moving", str(folder), "--output-transform", str(tmp_path / "t.h5")])
    stderr = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_INPUT and words in stderr[-1]


def test_cli_initial_transform_errors(tmp_path, capsys):
    write_series(small_image(), tmp_path / "ct", "CT")
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    common = ["--fixed", str(tmp_path / "ct"), "--moving", str(tmp_path / "ct"), "--output-transform",
              str(tmp_path / "t.h5"), "--initial-transform"]
    assert main([*common, str(tmp_path / "missing.dcm")]) == EXIT_INPUT
    assert "initial transform not found" in capsys.readouterr().err
    assert main([*common, str(tmp_path / "ct" / next(iter(sorted((tmp_path / "ct").iterdir()))).name)]) == EXIT_INPUT
    assert "is not a DICOM Spatial Registration" in capsys.readouterr().err


def test_folder_without_images(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM image files"):
        find_series(tmp_path)


def test_node_carries_the_dicom_modality_into_the_image(tmp_path, context):
    image = small_image()
    hounsfield = sitk.Cast(image > 0, sitk.sitkInt16) * 1000 - 1000  # air -1000 and water 0, labelled MR
    write_series(hounsfield, tmp_path, "MR")
    node, series = load_dicom_volume(context, tmp_path)
    assert node_modality(node) == "MR" and series.modality == "MR"
    untagged = sitk_from_volume(node)
    assert guess_modality(untagged) == "CT"
    assert guess_modality(tag_modality(untagged, node)) == "MR"
    assert node.GetAttribute("DICOM.instanceUIDs").split() == list(series.sop_instance_uids)


def test_modality_of_a_volume_from_slicers_dicom_module(context, monkeypatch):
    """Slicer's DICOM module sets only DICOM.instanceUIDs: the modality comes from its database."""
    import slicer

    files, tags = {"1.2.3": "/dicom/1.dcm"}, {("/dicom/1.dcm", "0008,0060"): "MR "}
    database = SimpleNamespace(isOpen=True, fileForInstance=lambda uid: files.get(uid, ""),
                               fileValue=lambda path, tag: tags.get((path, tag), ""))
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    node = context.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "from DICOM")
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3 1.2.4")
    assert node_modality(node) == "MR"
    node.SetAttribute("DICOM.instanceUIDs", "9.9.9")
    assert node_modality(node) is None
    assert node_modality(context.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "from a file")) is None


@pytest.mark.parametrize("patient, modality", [("STS_002", "CT"), ("STS_003", "MR_T1")])
def test_real_series_reads_as_its_nifti(patient, modality):
    folder = sts_thigh() / patient / modality
    image, series = load_series(folder / "dicom" / "image")
    nifti = sitk.ReadImage(str(folder / "nifti" / "image" / "image.nii.gz"))
    assert series.modality == modality[:2] and image.GetSize() == nifti.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(nifti))
    for corner in ([0, 0, 0], [s - 1 for s in image.GetSize()]):
        distance = np.subtract(image.TransformIndexToPhysicalPoint(corner), nifti.TransformIndexToPhysicalPoint(corner))
        assert np.linalg.norm(distance) < 1e-3  # mm: the NIfTI stores its geometry in single precision


@pytest.mark.slow
def test_cli_dicom_folder_registers_as_the_same_series_in_a_volume_file(tmp_path, capsys, sample_ct, sample_mr,
                                                                        ct_object_points):
    write_series(sample_ct, tmp_path / "dicom", "CT", description="porcine CT")
    write_series(sample_mr, tmp_path / "dicom", "MR", series_uid="1.2.826.0.1.3680043.8.498.7", description="T2")
    sitk.WriteImage(sample_ct, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(sample_mr, str(tmp_path / "mr.nrrd"))
    common = ["--output-transform", str(tmp_path / "t.h5"), "--threads", "1", "--no-qa", "--json"]
    folder = str(tmp_path / "dicom")
    assert main(["--fixed", folder, "--moving", folder, *common]) == EXIT_INPUT  # two series, no UID
    capsys.readouterr()
    ct_uid = [s.series_uid for s in find_series(folder) if s.modality == "CT"][0]
    results = []
    for inputs in (["--fixed", folder, "--fixed-series", ct_uid, "--moving", folder, "--moving-series",
                    "1.2.826.0.1.3680043.8.498.7", "--output-dicom-reg", str(tmp_path / "reg.dcm")],
                   ["--fixed", str(tmp_path / "ct.nrrd"), "--moving", str(tmp_path / "mr.nrrd")]):
        assert main([*inputs, *common]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert [r["fixed_modality"] for r in results] == ["CT", "CT"]
    matrices = [np.asarray(r["transform"]) for r in results]
    assert p95_distance(*matrices, ct_object_points) < 0.1
    registration = pydicom.dcmread(results[0]["outputs"]["dicom_reg"])
    [moving_item] = [item for item in registration.RegistrationSequence
                     if not np.allclose(moving_to_fixed(item), np.eye(4))]
    mapped = transform_points(moving_to_fixed(moving_item), transform_points(matrices[0], ct_object_points))
    assert np.abs(mapped - ct_object_points).max() < 0.01  # the REG holds the inverse of fixed->moving


def moving_to_fixed(item) -> np.ndarray:
    values = item.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix
    return np.asarray([float(v) for v in values]).reshape(4, 4)
