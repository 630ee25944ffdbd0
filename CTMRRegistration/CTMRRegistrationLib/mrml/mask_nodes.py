"""User masks given as MRML nodes (labelmap volumes or segmentations) turned into the images the pipeline takes."""

from __future__ import annotations

from dataclasses import replace

import SimpleITK as sitk

from ..registration.pipeline import RegistrationOptions
from .qa_inputs import labelmap_from_node
from .scene import MRMLContext

MASK_OPTIONS = ("fixed_mask", "moving_mask")


def mask_image(context: MRMLContext, node) -> sitk.Image:
    """A UInt8 image (LPS, world), 1 where any label or segment of `node` is, else 0."""
    labels, _ = labelmap_from_node(context, node)
    return sitk.Cast(labels != 0, sitk.sitkUInt8)


def with_mask_images(context: MRMLContext, options: RegistrationOptions) -> RegistrationOptions:
    """The options with their fixed_mask/moving_mask nodes replaced by images."""
    nodes = {name: getattr(options, name) for name in MASK_OPTIONS}
    return replace(options, **{name: mask_image(context, node) for name, node in nodes.items()
                               if node is not None and not isinstance(node, sitk.Image)})
