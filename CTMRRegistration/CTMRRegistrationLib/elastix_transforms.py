"""Elastix TransformParameters maps <-> SimpleITK linear transforms (both resampling, LPS)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .elastix_parameters import ParameterMap
from .errors import RegistrationError
from .geometry import matrix_from_sitk


def _floats(parameters: ParameterMap, key: str) -> list[float]:
    return [float(v) for v in parameters[key]]


def sitk_from_transform_map(parameters: ParameterMap) -> sitk.Transform:
    """The transform of one elastix TransformParameters map, without its initial transforms."""
    kind = parameters["Transform"][0]
    values = _floats(parameters, "TransformParameters")
    center = _floats(parameters, "CenterOfRotationPoint")
    if kind == "EulerTransform":
        transform = sitk.Euler3DTransform(center, *values[:3], values[3:6])
        transform.SetComputeZYX(parameters.get("ComputeZYX", ["false"])[0] == "true")
        return transform
    if kind == "SimilarityTransform":
        return sitk.Similarity3DTransform(values[6], values[:3], values[3:6], center)
    if kind == "AffineTransform":
        transform = sitk.AffineTransform(values[:9], values[9:12], center)
        return transform
    raise RegistrationError(f"elastix returned a {kind}, which this function does not convert")


def linear_transform_map(matrix: np.ndarray, reference: sitk.Image) -> ParameterMap:
    """An elastix AffineTransform map holding a 4x4 LPS resampling matrix, on `reference`'s grid.

    Used as the initial transform of a registration and to export linear results to elastix.
    """
    center = np.asarray(
        reference.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in reference.GetSize()])
    )
    linear = matrix[:3, :3]
    translation = matrix[:3, 3] + linear @ center - center
    return {
        "Transform": ["AffineTransform"],
        "NumberOfParameters": ["12"],
        "TransformParameters": [repr(float(v)) for v in list(linear.ravel()) + list(translation)],
        "InitialTransformParametersFileName": ["NoInitialTransform"],
        "HowToCombineTransforms": ["Compose"],
        "FixedImageDimension": ["3"],
        "MovingImageDimension": ["3"],
        "FixedInternalImagePixelType": ["float"],
        "MovingInternalImagePixelType": ["float"],
        "Size": [str(s) for s in reference.GetSize()],
        "Index": ["0", "0", "0"],
        "Spacing": [repr(float(v)) for v in reference.GetSpacing()],
        "Origin": [repr(float(v)) for v in reference.GetOrigin()],
        "Direction": [repr(float(v)) for v in reference.GetDirection()],
        "UseDirectionCosines": ["true"],
        "CenterOfRotationPoint": [repr(float(v)) for v in center],
        "ResampleInterpolator": ["FinalLinearInterpolator"],
        "Resampler": ["DefaultResampler"],
        "DefaultPixelValue": ["0"],
        "ResultImageFormat": ["nrrd"],
        "ResultImagePixelType": ["float"],
        "CompressResultImage": ["true"],
    }


def compose_linear(initial: sitk.Transform, stage: sitk.Transform) -> np.ndarray:
    """4x4 matrix of elastix's "Compose": the initial transform is applied first, then the stage's."""
    return matrix_from_sitk(stage) @ matrix_from_sitk(initial)
