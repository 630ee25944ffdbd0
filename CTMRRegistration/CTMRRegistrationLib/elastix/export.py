"""Write any linear or B-spline registration result as elastix TransformParameters files for transformix."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from ..core.output_files import write_text_atomically
from .parameters import format_parameter_map
from .transforms import elastix_transform_maps


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
