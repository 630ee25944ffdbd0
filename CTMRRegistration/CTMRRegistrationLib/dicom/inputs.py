"""Turn an input path into an image with its DICOM series: a folder of DICOM files, or one file of a series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.geometry import matrix_from_sitk
from .series import DicomSeries, choose_series, find_series, load_series
from .spatial_registration import read_spatial_registration


def is_dicom_file(path) -> bool:
    """True for a file with the DICOM preamble ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_input(path) -> bool:
    """True when `path` names DICOM: a folder (searched recursively) or a DICOM file."""
    path = Path(path)
    return path.is_dir() or (path.is_file() and is_dicom_file(path))


def read_dicom_input(path, series_uid: str | None = None, role: str = "input") -> tuple[sitk.Image, DicomSeries]:
    """The image and series of a DICOM folder (one series, or `series_uid`) or of the series one file belongs to
    (the other slices are looked for in the file's folder)."""
    path = Path(path)
    if path.is_dir():
        return load_series(path, series_uid, role)
    if not path.is_file():
        raise InputError(f"{role} not found: {path}")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    uid = str(header.get("SeriesInstanceUID", ""))
    if series_uid is not None and series_uid != uid:
        raise InputError(f"{path.name} belongs to series {uid}, not {series_uid}")
    choose_series(find_series(path.parent), uid, role)  # a clear error when the file is no image
    return load_series(path.parent, uid, role)


def read_initial_matrix(path, moving: DicomSeries | None = None) -> np.ndarray:
    """The fixed->moving 4x4 LPS matrix of a start pose file: a DICOM Spatial Registration (.dcm) or a linear
    ITK transform file (.tfm, .h5, .txt, fixed->moving)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"initial transform not found: {path}")
    if is_dicom_file(path):
        return read_spatial_registration(path, moving)
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError:
        raise InputError(f"cannot read {path.name}: neither a DICOM REG nor an ITK transform file") from None
    try:
        return matrix_from_sitk(transform)
    except ValueError:
        raise InputError(f"{path.name} is not linear: an initial transform must be rigid or affine") from None
