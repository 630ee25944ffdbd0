"""DICOM Deformable Spatial Registration objects (PS3.3 A.40 / C.20.3) for a deformable result, with pydicom.

As for the rigid REG, the object's frame is the FIXED one and it maps MOVING (source) patient coordinates to
FIXED (registered) ones, the inverse of our fixed->moving resampling transform L(B(x)) (L linear, B = x + d(x)
the B-spline part). It is written as: Pre Deformation Matrix = L^-1 (moving -> fixed-like coordinates), then the
Deformable Registration Grid: displacement vectors u sampled on a grid over the fixed image with
B^-1(y) = y + u(y) (the B-spline displacement inverted by ITK's InvertDisplacementField), and an identity Post
Deformation Matrix. A moving point p thus lands at q = Post(Pre(p) + u(Pre(p))). Reading inverts the field again
and returns the fixed->moving transform Pre^-1(D(Post^-1(x))) with D(y) = y + d(y) as a displacement field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ..core.errors import InputError
from ..core.geometry import matrix_from_sitk, sitk_from_matrix
from .references import image_references
from .series import DicomSeries
from .spatial_registration import decimal_strings, matrix_type, new_registration_dataset

DEFORMABLE_SPATIAL_REGISTRATION = "1.2.840.10008.5.1.4.1.1.66.3"
GRID_SPACING_MM = 4.0
INVERSION_ITERATIONS = 50


def _split(transform: sitk.Transform) -> tuple[np.ndarray, sitk.Transform]:
    """(L, B) of a composite fixed->moving transform L(B(x)): the linear transforms applied last, as one matrix,
    and the rest (the deformation, applied first)."""
    composite = sitk.CompositeTransform(transform)
    parts = [composite.GetNthTransform(i) for i in range(composite.GetNumberOfTransforms())]  # parts[-1] first
    linear = np.eye(4)
    while len(parts) > 1 and parts[0].IsLinear():
        linear = linear @ matrix_from_sitk(parts.pop(0))
    deformation = parts[0] if len(parts) == 1 else sitk.CompositeTransform(parts)
    return linear, deformation


def _grid(reference: sitk.Image, spacing_mm: float) -> sitk.Image:
    """A grid covering `reference`'s box with about `spacing_mm` between points, same orientation."""
    size = [max(2, int(np.ceil(n * s / spacing_mm)) + 1) for n, s in zip(reference.GetSize(), reference.GetSpacing())]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetDirection(reference.GetDirection())
    grid.SetOrigin(reference.GetOrigin())
    return grid


def _displacements(transform: sitk.Transform, grid: sitk.Image) -> sitk.Image:
    converter = sitk.TransformToDisplacementFieldFilter()
    converter.SetReferenceImage(grid)
    converter.SetOutputPixelType(sitk.sitkVectorFloat64)
    return converter.Execute(transform)


def _inverted(field: sitk.Image) -> sitk.Image:
    inverter = sitk.InvertDisplacementFieldImageFilter()
    inverter.SetMaximumNumberOfIterations(INVERSION_ITERATIONS)
    inverter.SetEnforceBoundaryCondition(False)
    return inverter.Execute(field)


def _matrix_sequence(matrix: np.ndarray) -> Sequence:
    transformation = Dataset()
    transformation.FrameOfReferenceTransformationMatrix = decimal_strings(matrix)
    transformation.FrameOfReferenceTransformationMatrixType = matrix_type(matrix)
    return Sequence([transformation])


def write_deformable_registration(path, transform: sitk.Transform, reference: sitk.Image, fixed: DicomSeries,
                                  moving: DicomSeries, spacing_mm: float = GRID_SPACING_MM,
                                  verdict: str | None = None) -> Path:
    """Write a Deformable REG of the fixed->moving composite `transform`, its grid over `reference` (the fixed
    image) every `spacing_mm`."""
    linear, deformation = _split(transform)
    grid = _grid(reference, spacing_mm)
    inverse = _inverted(_displacements(deformation, grid))
    dataset = new_registration_dataset(DEFORMABLE_SPATIAL_REGISTRATION, fixed, moving, "CT MR deformable", verdict)
    grid_item = Dataset()
    grid_item.ImagePositionPatient = decimal_strings(grid.GetOrigin())
    direction = np.asarray(grid.GetDirection()).reshape(3, 3)
    grid_item.ImageOrientationPatient = decimal_strings(np.concatenate([direction[:, 0], direction[:, 1]]))
    grid_item.GridDimensions = list(grid.GetSize())
    grid_item.GridResolution = list(grid.GetSpacing())
    grid_item.VectorGridData = sitk.GetArrayFromImage(inverse).astype("<f4").tobytes()
    fixed_item = Dataset()  # the registered frame itself, naming the fixed images
    fixed_item.SourceFrameOfReferenceUID = fixed.frame_of_reference_uid
    fixed_item.ReferencedImageSequence = image_references(fixed)
    fixed_item.RegistrationTypeCodeSequence = Sequence()
    fixed_item.PreDeformationMatrixRegistrationSequence = _matrix_sequence(np.eye(4))
    item = Dataset()
    item.SourceFrameOfReferenceUID = moving.frame_of_reference_uid
    item.ReferencedImageSequence = image_references(moving)
    item.RegistrationTypeCodeSequence = Sequence()
    item.PreDeformationMatrixRegistrationSequence = _matrix_sequence(np.linalg.inv(linear))
    item.PostDeformationMatrixRegistrationSequence = _matrix_sequence(np.eye(4))
    item.DeformableRegistrationGridSequence = Sequence([grid_item])
    dataset.DeformableRegistrationSequence = Sequence([fixed_item, item])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _sequence_matrix(item: Dataset, keyword: str) -> np.ndarray:
    steps = item.get(keyword) or []
    if not steps:
        return np.eye(4)
    return np.asarray([float(v) for v in steps[0].FrameOfReferenceTransformationMatrix]).reshape(4, 4)


def _grid_field(grid_item: Dataset) -> sitk.Image:
    size = [int(v) for v in grid_item.GridDimensions]
    vectors = np.frombuffer(grid_item.VectorGridData, dtype="<f4")
    if vectors.size != 3 * int(np.prod(size)):
        raise InputError("the deformable REG's vector grid does not match its grid dimensions")
    field = sitk.GetImageFromArray(vectors.reshape(size[2], size[1], size[0], 3).astype(np.float64), isVector=True)
    field.SetSpacing([float(v) for v in grid_item.GridResolution])
    field.SetOrigin([float(v) for v in grid_item.ImagePositionPatient])
    row_column = np.asarray([float(v) for v in grid_item.ImageOrientationPatient])
    field.SetDirection(np.column_stack([row_column[:3], row_column[3:], np.cross(row_column[:3], row_column[3:])])
                       .ravel().tolist())
    return field


def read_deformable_registration(path) -> sitk.Transform:
    """The fixed->moving transform (a composite: linear, displacement field, linear) of a Deformable REG file."""
    path = Path(path)
    dataset = pydicom.dcmread(path)
    if str(dataset.get("SOPClassUID", "")) != DEFORMABLE_SPATIAL_REGISTRATION:
        raise InputError(f"{path.name} is not a DICOM Deformable Spatial Registration")
    items = [item for item in dataset.get("DeformableRegistrationSequence", [])
             if item.get("DeformableRegistrationGridSequence")]
    if len(items) != 1:
        raise InputError(f"{path.name}: expected one deformable registration with a grid, found {len(items)}")
    item = items[0]
    pre = _sequence_matrix(item, "PreDeformationMatrixRegistrationSequence")
    post = _sequence_matrix(item, "PostDeformationMatrixRegistrationSequence")
    field = _inverted(_grid_field(item.DeformableRegistrationGridSequence[0]))
    deformation = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.CompositeTransform([sitk_from_matrix(np.linalg.inv(pre)), deformation,
                                    sitk_from_matrix(np.linalg.inv(post))])
