"""Test helpers for DICOM: classic single-frame series written from SimpleITK images with pydicom, and the
sts-thigh data set (real CT/MR DICOM series with RTSTRUCTs) when ../shared holds it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

STORAGE = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
REPOSITORY = Path(__file__).resolve().parents[3]


def sts_thigh() -> Path:
    """The sts-thigh data folder; the test skips when it is absent."""
    shared = os.environ.get("CTMR_SHARED_DATA")
    root = Path(shared).parent if shared else REPOSITORY.parent / "shared" / "data"
    folder = root / "sts-thigh"
    if not (folder / "STS_002").is_dir():
        pytest.skip("sts-thigh data not found (../shared/data/sts-thigh)")
    return folder


def write_series(image: sitk.Image, folder: Path, modality: str, series_uid: str | None = None,
                 study_uid: str | None = None, frame_uid: str | None = None, description: str = "test series",
                 slices=None) -> list[Path]:
    """One file per slice of `image` (stored as int16), CT or MR Image Storage; `slices` picks which slices."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = series_uid or generate_uid(), study_uid or generate_uid(), \
        frame_uid or generate_uid()
    array = np.round(sitk.GetArrayFromImage(image)).astype(np.int16)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    paths = []
    for k in (range(array.shape[0]) if slices is None else slices):
        position = np.asarray(image.TransformIndexToPhysicalPoint([0, 0, int(k)]))
        paths.append(write_slice(folder / f"{series_uid}_{k:04d}.dcm", array[k], position, direction, spacing[:2],
                                 modality, series_uid, study_uid, frame_uid, description, k + 1))
    return paths


def write_slice(path: Path, pixels: np.ndarray, position, direction: np.ndarray, pixel_spacing, modality: str,
                series_uid: str, study_uid: str, frame_uid: str, description: str = "test series",
                number: int = 1) -> Path:
    """One CT/MR Image Storage file: `pixels` (rows x columns int16) at `position` with in-plane axes the first
    two columns of `direction` and `pixel_spacing` (x, y)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = STORAGE[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = STORAGE[modality], meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "SECRET-ID-42", "", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, "20260101", "120000", "1"
    ds.ReferringPhysicianName, ds.AccessionNumber = "", ""
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = modality, series_uid, 1, description
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([direction[:, 0], direction[:, 1]])]
    ds.PixelSpacing = [f"{pixel_spacing[1]:.6f}", f"{pixel_spacing[0]:.6f}"]
    ds.SliceThickness = "1"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def sop_instance_uids(paths) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
