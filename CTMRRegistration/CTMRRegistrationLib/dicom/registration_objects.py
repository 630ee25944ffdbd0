"""The DICOM registration object of a result: a Spatial Registration (REG) for a linear transform, a Deformable
Spatial Registration for a deformable one; and either read back into a fixed->moving transform."""

from __future__ import annotations

from pathlib import Path

import pydicom
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.geometry import matrix_from_sitk, sitk_from_matrix
from ..elastix.transforms import is_linear
from .deformable_registration import (
    DEFORMABLE_SPATIAL_REGISTRATION,
    read_deformable_registration,
    write_deformable_registration,
)
from .series import DicomSeries
from .spatial_registration import read_spatial_registration, write_spatial_registration


def write_registration_object(path, transform: sitk.Transform, fixed: DicomSeries | None,
                              moving: DicomSeries | None, reference: sitk.Image | None = None,
                              verdict: str | None = None, allow_failed: bool = False) -> Path:
    """Write the fixed->moving `transform` as a REG (linear) or Deformable REG (its grid over `reference`, the
    fixed image); both series must come from DICOM. The quality `verdict` goes into the object's description; a
    `failed` result is written only with `allow_failed` (a planning system would import it)."""
    if verdict == "failed" and not allow_failed:
        raise InputError("the quality verdict is failed: a DICOM registration object of it needs an explicit "
                         "choice (--export-failed, or confirm in the panel)")
    if fixed is None or moving is None:
        raise InputError("a DICOM registration object needs DICOM series as fixed and moving images")
    if is_linear(transform):
        return write_spatial_registration(path, matrix_from_sitk(transform), fixed, moving, verdict)
    if reference is None:
        raise InputError("a deformable registration object needs the fixed image to lay its grid on")
    return write_deformable_registration(path, transform, reference, fixed, moving, verdict=verdict)


def read_registration_object(path, moving: DicomSeries | None = None) -> sitk.Transform:
    """The fixed->moving transform of a REG or Deformable REG file."""
    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    if str(header.get("SOPClassUID", "")) == DEFORMABLE_SPATIAL_REGISTRATION:
        return read_deformable_registration(path)
    return sitk_from_matrix(read_spatial_registration(path, moving))
