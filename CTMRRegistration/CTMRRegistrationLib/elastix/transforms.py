"""Elastix TransformParameters maps <-> SimpleITK transforms (both resampling transforms, LPS), and a result
written as files for transformix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import RegistrationError
from ..core.geometry import matrix_from_sitk, sitk_from_matrix
from ..core.output_files import write_text_atomically
from .parameters import ParameterMap, format_parameter_map


def _floats(parameters: ParameterMap, key: str) -> list[float]:
    return [float(v) for v in parameters[key]]


def sitk_from_transform_map(parameters: ParameterMap) -> sitk.Transform:
    """The transform of one elastix TransformParameters map, without its initial transforms."""
    kind = parameters["Transform"][0]
    values = _floats(parameters, "TransformParameters")
    center = _floats(parameters, "CenterOfRotationPoint") if "CenterOfRotationPoint" in parameters else []
    if kind == "EulerTransform":
        transform = sitk.Euler3DTransform(center, *values[:3], values[3:6])
        transform.SetComputeZYX(parameters.get("ComputeZYX", ["false"])[0] == "true")
        return transform
    if kind == "SimilarityTransform":
        return sitk.Similarity3DTransform(values[6], values[:3], values[3:6], center)
    if kind == "AffineTransform":
        return sitk.AffineTransform(values[:9], values[9:12], center)
    if kind == "BSplineTransform":
        return _bspline(parameters, values)
    raise RegistrationError(f"elastix returned a {kind}, which this function does not convert")


def _bspline(parameters: ParameterMap, coefficients: list[float]) -> sitk.BSplineTransform:
    """elastix's B-spline grid (size, origin, spacing, direction of the coefficient images) is ITK's."""
    order = int(parameters.get("BSplineTransformSplineOrder", ["3"])[0])
    if order != 3:
        raise RegistrationError(f"elastix returned a B-spline of order {order}; only cubic B-splines are converted")
    transform = sitk.BSplineTransform(3, order)
    grid = [_floats(parameters, key) for key in ("GridSize", "GridOrigin", "GridSpacing", "GridDirection")]
    transform.SetFixedParameters(sum(grid, []))
    transform.SetParameters(coefficients)
    return transform


def is_linear(transform: sitk.Transform) -> bool:
    return transform.IsLinear() and transform.GetTransformEnum() != sitk.sitkComposite


def compose(first, second) -> sitk.Transform:
    """One resampling transform applying `first`, then `second` (SimpleITK transforms or 4x4 matrices), as
    elastix's "Compose": an exact AffineTransform when both are linear, else a CompositeTransform."""
    first, second = (sitk_from_matrix(t) if isinstance(t, np.ndarray) else t for t in (first, second))
    if first.IsLinear() and second.IsLinear():
        return sitk_from_matrix(matrix_from_sitk(second) @ matrix_from_sitk(first))
    return sitk.CompositeTransform([second, first])


def _numbers(values) -> list[str]:
    return [repr(float(v)) for v in values]


def _output_grid(reference: sitk.Image) -> ParameterMap:
    """The keys every TransformParameters map carries: `reference`'s grid, where transformix resamples."""
    return {
        "InitialTransformParametersFileName": ["NoInitialTransform"],
        "HowToCombineTransforms": ["Compose"],
        "FixedImageDimension": ["3"],
        "MovingImageDimension": ["3"],
        "FixedInternalImagePixelType": ["float"],
        "MovingInternalImagePixelType": ["float"],
        "Size": [str(s) for s in reference.GetSize()],
        "Index": ["0", "0", "0"],
        "Spacing": _numbers(reference.GetSpacing()),
        "Origin": _numbers(reference.GetOrigin()),
        "Direction": _numbers(reference.GetDirection()),
        "UseDirectionCosines": ["true"],
        "ResampleInterpolator": ["FinalBSplineInterpolator"],  # order 1 = linear, in every elastix release
        "FinalBSplineInterpolationOrder": ["1"],
        "Resampler": ["DefaultResampler"],
        "DefaultPixelValue": ["0"],
        "ResultImageFormat": ["nrrd"],
        "ResultImagePixelType": ["float"],
        "CompressResultImage": ["true"],
    }


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
        "TransformParameters": _numbers(list(linear.ravel()) + list(translation)),
        "CenterOfRotationPoint": _numbers(center),
    } | _output_grid(reference)


def bspline_transform_map(transform: sitk.BSplineTransform, reference: sitk.Image) -> ParameterMap:
    """An elastix BSplineTransform map of a cubic ITK B-spline (same coefficient grid), on `reference`'s grid."""
    fixed = list(transform.GetFixedParameters())
    return {
        "Transform": ["BSplineTransform"],
        "NumberOfParameters": [str(len(transform.GetParameters()))],
        "TransformParameters": _numbers(transform.GetParameters()),
        "GridSize": [str(int(v)) for v in fixed[0:3]],
        "GridIndex": ["0", "0", "0"],
        "GridOrigin": _numbers(fixed[3:6]),
        "GridSpacing": _numbers(fixed[6:9]),
        "GridDirection": _numbers(fixed[9:18]),
        "BSplineTransformSplineOrder": [str(transform.GetOrder())],
        "UseCyclicTransform": ["false"],
    } | _output_grid(reference)


def _applied_in_order(transform: sitk.Transform) -> list[sitk.Transform]:
    """The members of a (possibly composite) transform in the order they act on a point."""
    if transform.GetTransformEnum() != sitk.sitkComposite:
        return [transform]
    composite = sitk.CompositeTransform(transform)
    members = [composite.GetNthTransform(i) for i in range(composite.GetNumberOfTransforms())]
    return [t for member in reversed(members) for t in _applied_in_order(member)]


def elastix_transform_maps(transform: sitk.Transform, reference: sitk.Image) -> list[ParameterMap]:
    """TransformParameters maps for transformix, the first applied first: linear parts as AffineTransform,
    B-splines as BSplineTransform. Link them with `write_transform_chain`."""
    maps = []
    for member in _applied_in_order(transform):
        if is_linear(member):
            maps.append(linear_transform_map(matrix_from_sitk(member), reference))
        elif member.GetTransformEnum() == sitk.sitkBSplineTransform:
            maps.append(bspline_transform_map(sitk.BSplineTransform(member), reference))
        else:
            raise RegistrationError(f"a {member.GetName()} has no elastix TransformParameters form")
    return maps


def write_elastix_transform(transform: sitk.Transform, reference: sitk.Image, path) -> list[Path]:
    """Write the fixed->moving `transform` (LPS) so that `transformix -tp PATH -in MOVING` resamples MOVING on
    `reference`'s grid as SimpleITK and Slicer do. A chain (linear part, then B-spline) is written as
    PATH plus PATH's stem + '.0.txt', ... that PATH names as its initial transform (absolute paths).
    Returns the files written, the one to pass to transformix last. Each file is written atomically."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    maps = elastix_transform_maps(transform, reference)
    written: list[Path] = []
    for index, parameters in enumerate(maps):
        target = path if index == len(maps) - 1 else path.with_name(f"{path.stem}.{index}.txt")
        if written:
            parameters = parameters | {"InitialTransformParametersFileName": [str(written[-1])]}
        written.append(write_text_atomically(target, format_parameter_map(parameters)))
    return written
