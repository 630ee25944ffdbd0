"""RTSTRUCT for QA: rasterisation (holes, slice matching, refusals), equality with the NIfTI masks of the same
outlines, and Dice through `ctmr-qa` equal to the NIfTI masks' Dice."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_samples import sts_thigh
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from CTMRRegistrationLib.apps.qa_cli import main as qa_main
from CTMRRegistrationLib.core.errors import InputError
from CTMRRegistrationLib.core.geometry import sitk_from_matrix
from CTMRRegistrationLib.dicom.rtstruct import RTSTRUCT, rasterise_structure_set
from CTMRRegistrationLib.qa.segmentation_metrics import relabel_by_name


def square(centre, half: float, z: float) -> np.ndarray:
    cx, cy = centre
    return np.array([[cx - half, cy - half, z], [cx + half, cy - half, z], [cx + half, cy + half, z],
                     [cx - half, cy + half, z]])


def write_rtstruct(path, rois: dict[str, list[np.ndarray]], frame_uid: str = "1.2.3") -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTSTRUCT, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTSTRUCT, meta.MediaStorageSOPInstanceUID, "RTSTRUCT"
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame_uid
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber, item.ContourSequence = number, Sequence()
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", len(points)
            contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    ds.save_as(path, enforce_file_format=True)


def grid(spacing_z: float = 2.0, slices: int = 10) -> sitk.Image:
    image = sitk.Image([20, 20, slices], sitk.sitkInt16)
    image.SetSpacing([1.0, 1.0, spacing_z])
    return image


def test_holes_slices_and_names(tmp_path):
    outer, hole = square((10, 10), 6.0, 4.0), square((10, 10), 2.0, 4.0)  # 12 x 12 mm with a 4 x 4 mm hole
    write_rtstruct(tmp_path / "rs.dcm", {"ring": [outer, hole], "box": [square((4, 4), 1.0, z) for z in (8, 14)]})
    labels, names = rasterise_structure_set(tmp_path / "rs.dcm", grid())
    array = sitk.GetArrayFromImage(labels)
    assert names == {1: "ring", 2: "box"}
    # voxel centres on the left/lower edges count, on the right/upper ones not: 12 x 12 minus 4 x 4, at z = 4 mm
    assert (array[2] == 1).sum() == 12 * 12 - 4 * 4 and (array == 1).sum() == 12 * 12 - 4 * 4
    # contours every 6 mm (3 slices): each fills the slices within half that of its plane
    assert [int((array[k] == 2).sum()) for k in range(10)] == [0, 0, 0, 4, 4, 4, 4, 4, 4, 0]
    fine, _ = rasterise_structure_set(tmp_path / "rs.dcm", grid(spacing_z=1.0, slices=20))  # a 1 mm grid
    assert [int((sitk.GetArrayFromImage(fine)[k] == 2).sum()) for k in range(20)] == [0] * 5 + [4] * 13 \
        + [0] * 2  # each slice takes the nearest contour plane within 3 mm


def test_refusals(tmp_path):
    tilted = square((10, 10), 4.0, 4.0)
    tilted[:, 2] += [0.0, 3.0, 3.0, 0.0]
    write_rtstruct(tmp_path / "tilted.dcm", {"tilted": [tilted]})
    with pytest.raises(InputError, match="not parallel to the image slices"):
        rasterise_structure_set(tmp_path / "tilted.dcm", grid())
    write_rtstruct(tmp_path / "rs.dcm", {"box": [square((10, 10), 3.0, 4.0)]}, frame_uid="1.2.3")
    with pytest.raises(InputError, match="another frame of reference"):
        rasterise_structure_set(tmp_path / "rs.dcm", grid(), frame_of_reference_uid="9.9.9")
    sitk.WriteImage(grid(), str(tmp_path / "image.nrrd"))
    with pytest.raises(InputError, match="not a DICOM RT Structure Set"):
        rasterise_structure_set(tmp_path / "image.nrrd", grid())


def test_single_segments_pair_across_names():
    labels = sitk.Image([4, 4, 4], sitk.sitkUInt8) + 3
    paired = relabel_by_name(labels, {3: "GTV_Mass_MR_T1"}, {1: "GTV_Mass_CT"})
    assert set(np.unique(sitk.GetArrayFromImage(paired))) == {1}
    two = relabel_by_name(labels, {3: "kidney"}, {1: "liver", 2: "kidney"})
    assert set(np.unique(sitk.GetArrayFromImage(two))) == {2}


@pytest.mark.parametrize("patient, modality", [("STS_002", "MR_T1"), ("STS_003", "CT")])
def test_real_rtstruct_rasterises_as_its_nifti_mask(patient, modality):
    from CTMRRegistrationLib.dicom.series import load_series

    folder = sts_thigh() / patient / modality
    image, series = load_series(folder / "dicom" / "image")
    labels, names = rasterise_structure_set(folder / "dicom" / "mask" / "RS.dcm", image, series.frame_of_reference_uid)
    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "nifti" / "mask" / "mask.nii.gz"))) > 0
    ours = sitk.GetArrayFromImage(labels) > 0
    assert names == {1: f"GTV_Mass_{modality}"}
    assert nifti.sum() > 10000 and 2 * (ours & nifti).sum() / (ours.sum() + nifti.sum()) > 0.99


@pytest.mark.slow
def test_rtstruct_dice_in_qa_equals_the_nifti_masks_dice(tmp_path, capsys):
    patient = sts_thigh() / "STS_002"
    shift = np.eye(4)
    shift[:3, 3] = [3.0, -2.0, 4.0]  # CT and MR share one frame; a known 5.4 mm error
    sitk.WriteTransform(sitk_from_matrix(shift), str(tmp_path / "shift.tfm"))
    dice = {}
    for kind, image, mask in (("dicom", "dicom/image", "dicom/mask/RS.dcm"),
                              ("nifti", "nifti/image/image.nii.gz", "nifti/mask/mask.nii.gz")):
        qa_main(["--fixed", str(patient / "CT" / image), "--moving", str(patient / "MR_T1" / image), "--transform",
                 str(tmp_path / "shift.tfm"), "--fixed-segmentation", str(patient / "CT" / mask),
                 "--moving-segmentation", str(patient / "MR_T1" / mask), "--restarts", "0", "--threads", "1", "--json"])
        segmentations = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["metrics"]["segmentations"]
        dice[kind] = [next(iter(segmentations[when].values()))["dice"] for when in ("before", "after")]
    assert dice["dicom"][0] == dice["nifti"][0] == 1.0
    assert abs(dice["dicom"][1] - dice["nifti"][1]) < 0.02 and dice["nifti"][1] < 0.9
