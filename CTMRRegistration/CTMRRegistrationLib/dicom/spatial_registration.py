"""DICOM Spatial Registration objects (REG, PS3.3 A.39 / C.20.2) for a rigid or affine result, written and read
with pydicom.

Convention (the classic source of inverted REGs): the REG's Frame of Reference is the FIXED series' one, and the
matrix of the MOVING frame maps MOVING patient coordinates to FIXED patient coordinates (C.20.2.1.1). Our ITK
transforms map fixed -> moving, so the REG holds their inverse; reading a REG gives fixed -> moving again. DICOM
patient coordinates are LPS, like ITK's physical space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from ..core.errors import InputError
from ..core.resources import VERSION
from .references import content_now, copy_patient_and_study, image_references, reference_series
from .series import DicomSeries

SPATIAL_REGISTRATION = "1.2.840.10008.5.1.4.1.1.66.1"
MATRIX_TYPES = ("RIGID", "RIGID_SCALE", "AFFINE")


def matrix_type(matrix: np.ndarray) -> str:
    """RIGID when the 3x3 part is a rotation, RIGID_SCALE for a rotation times one scale, else AFFINE."""
    linear = matrix[:3, :3]
    gram = linear.T @ linear
    scale = np.cbrt(abs(np.linalg.det(linear)))
    if np.allclose(gram, np.eye(3), atol=1e-6) and np.linalg.det(linear) > 0:
        return "RIGID"
    if np.allclose(gram, scale**2 * np.eye(3), atol=1e-6 * scale**2) and np.linalg.det(linear) > 0:
        return "RIGID_SCALE"
    return "AFFINE"


def decimal_strings(values) -> list[DSfloat]:
    """Values as DICOM decimal strings (at most 16 characters each, about 12 significant digits)."""
    return [DSfloat(float(v), auto_format=True) for v in np.asarray(values).ravel()]


def _matrix_item(frame_uid: str, series: DicomSeries, matrix: np.ndarray, comment: str) -> Dataset:
    """One Registration Sequence item: `matrix` maps `frame_uid` coordinates to the registered (fixed) ones."""
    transformation = Dataset()
    transformation.FrameOfReferenceTransformationMatrix = decimal_strings(matrix)
    transformation.FrameOfReferenceTransformationMatrixType = matrix_type(matrix)
    registration = Dataset()
    registration.FrameOfReferenceTransformationComment = comment
    registration.RegistrationTypeCodeSequence = Sequence()
    registration.MatrixSequence = Sequence([transformation])
    item = Dataset()
    item.FrameOfReferenceUID = frame_uid
    item.ReferencedImageSequence = image_references(series)
    item.MatrixRegistrationSequence = Sequence([registration])
    return item


def new_registration_dataset(sop_class_uid: str, fixed: DicomSeries, moving: DicomSeries, label: str,
                             verdict: str | None = None) -> Dataset:
    """A registration object's modules common to REG and Deformable REG: patient and study of the fixed series,
    a new REG series, equipment, content (with the quality `verdict`, so a planning system shows it) and the
    references to every image of both series."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.SOPClassUID = sop_class_uid
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    copy_patient_and_study(fixed.header, dataset)
    dataset.Modality = "REG"
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SeriesNumber = 1
    dataset.SeriesDescription = f"{label} - QA FAILED" if verdict == "failed" else label
    dataset.Laterality = fixed.header.get("Laterality")
    dataset.FrameOfReferenceUID = fixed.frame_of_reference_uid
    dataset.PositionReferenceIndicator = None
    dataset.Manufacturer = "CTMRRegistration"
    dataset.ManufacturerModelName = "CTMRRegistration"
    dataset.DeviceSerialNumber = "0"
    dataset.SoftwareVersions = VERSION
    dataset.ContentDate, dataset.ContentTime = content_now()
    dataset.InstanceNumber = 1
    dataset.ContentLabel = label.upper().replace(" ", "_")[:16]
    dataset.ContentDescription = (f"{moving.modality or 'moving'} registered to {fixed.modality or 'fixed'}, "
                                  f"quality verdict: {verdict or 'not assessed'}")
    dataset.ContentCreatorName = None
    reference_series(dataset, fixed, moving)
    return dataset


def write_spatial_registration(path, fixed_to_moving: np.ndarray, fixed: DicomSeries, moving: DicomSeries,
                               verdict: str | None = None) -> Path:
    """Write a REG holding the linear fixed->moving (LPS) result: identity for the fixed frame, its inverse
    (moving -> fixed patient coordinates) for the moving frame."""
    matrix = np.asarray(fixed_to_moving, dtype=float)
    if matrix.shape != (4, 4) or not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise InputError("a Spatial Registration needs a 4x4 affine fixed->moving matrix")
    for role, series in (("fixed", fixed), ("moving", moving)):
        if not series.frame_of_reference_uid:
            raise InputError(f"the {role} series has no Frame of Reference UID: cannot reference it in a REG")
    dataset = new_registration_dataset(SPATIAL_REGISTRATION, fixed, moving, "CT MR registration", verdict)
    dataset.RegistrationSequence = Sequence([
        _matrix_item(fixed.frame_of_reference_uid, fixed, np.eye(4), "fixed (registered) frame"),
        _matrix_item(moving.frame_of_reference_uid, moving, np.linalg.inv(matrix), "moving to fixed"),
    ])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _item_matrix(item: Dataset) -> np.ndarray:
    """The product of an item's matrices, applied in sequence order (item frame -> registered frame)."""
    matrix = np.eye(4)
    for registration in item.get("MatrixRegistrationSequence", []):
        for step in registration.get("MatrixSequence", []):
            values = [float(v) for v in step.FrameOfReferenceTransformationMatrix]
            if len(values) != 16:
                raise InputError("a REG matrix does not have 16 values")
            matrix = np.asarray(values).reshape(4, 4) @ matrix
    return matrix


def _referenced_instances(item: Dataset) -> set[str]:
    return {str(reference.ReferencedSOPInstanceUID) for reference in item.get("ReferencedImageSequence", [])}


def _choose_moving_item(items: list[Dataset], registered_frame: str, moving: DicomSeries | None) -> Dataset:
    """The item of the moving series: by its image references or frame, else the one not in the REG's frame."""
    if moving is not None:
        for item in items:
            if _referenced_instances(item) & set(moving.sop_instance_uids):
                return item
        by_frame = [item for item in items if item.get("FrameOfReferenceUID") == moving.frame_of_reference_uid]
        if len(by_frame) == 1:
            return by_frame[0]
    others = [item for item in items if item.get("FrameOfReferenceUID") != registered_frame]
    if len(others) == 1:
        return others[0]
    not_identity = [item for item in items if not np.allclose(_item_matrix(item), np.eye(4))]
    if len(not_identity) == 1:
        return not_identity[0]
    raise InputError("the REG registers several frames of reference: cannot tell which one is the moving series")


def read_spatial_registration(path, moving: DicomSeries | None = None) -> np.ndarray:
    """The fixed->moving 4x4 LPS matrix stored in a REG file (the inverse of its moving frame's matrix, with
    the fixed frame's own matrix applied first). `moving` picks the moving item when the REG has several."""
    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError) as error:
        raise InputError(f"cannot read {path.name} as DICOM: {error}") from None
    if str(dataset.get("SOPClassUID", "")) != SPATIAL_REGISTRATION:
        raise InputError(f"{path.name} is not a DICOM Spatial Registration (SOP class {dataset.get('SOPClassUID')})")
    items = list(dataset.get("RegistrationSequence", []))
    if not items:
        raise InputError(f"{path.name} holds no registration")
    registered_frame = dataset.get("FrameOfReferenceUID")
    moving_item = _choose_moving_item(items, registered_frame, moving)
    fixed_items = [item for item in items if item is not moving_item]
    fixed_to_registered = _item_matrix(fixed_items[0]) if fixed_items else np.eye(4)
    moving_to_registered = _item_matrix(moving_item)
    if abs(np.linalg.det(moving_to_registered[:3, :3])) < 1e-9:
        raise InputError(f"{path.name}: the moving frame's matrix is singular")
    return np.linalg.inv(moving_to_registered) @ fixed_to_registered
