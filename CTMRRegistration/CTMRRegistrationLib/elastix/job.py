"""What one elastix registration needs, whichever backend runs it."""

from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk

from .parameters import ParameterMap


@dataclass
class ElastixJob:
    """Register `moving` to `fixed` with `parameter_maps` in turn, from an optional initial transform."""

    fixed: sitk.Image
    moving: sitk.Image
    parameter_maps: list[ParameterMap]
    initial_transform_map: ParameterMap | None = None
    fixed_mask: sitk.Image | None = None
    moving_mask: sitk.Image | None = None
    threads: int | None = None
