"""Ground truth for quality assessment taken from MRML nodes or files: paired target points and paired
segmentations, in the keyword form `qa.assess` takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..dicom.rtstruct import is_rtstruct
from ..landmarks.correspondence import order_by_labels
from ..qa.segmentation_metrics import label_values, relabel_by_name
from . import node_io as mrml_io
from .dicom_nodes import load_rtstruct
from .nodes import labels_from_markups, points_from_markups, sitk_from_volume
from .scene import MRMLContext


def check_pair(fixed, moving, what: str) -> bool:
    """True when both of a fixed/moving pair are given, False when neither; InputError for one alone."""
    if (fixed is None) != (moving is None):
        raise InputError(f"{what}: give both the fixed and the moving one")
    return fixed is not None


def target_points(fixed_markups, moving_markups, leave_out=None) -> dict:
    """`fixed_targets`/`moving_targets` (LPS, N x 3, world) of two markups lists, paired by label when both
    lists carry the same labels, else by position; `leave_out`: a transform node not to apply (the
    registration's own output)."""
    if not check_pair(fixed_markups, moving_markups, "target lists"):
        return {}
    fixed = points_from_markups(fixed_markups, leave_out)
    moving = points_from_markups(moving_markups, leave_out)
    order, _ = order_by_labels(labels_from_markups(fixed_markups), labels_from_markups(moving_markups))
    return {"fixed_targets": fixed, "moving_targets": moving[order] if order is not None else np.asarray(moving)}


def segmentation_pair(context: MRMLContext, fixed_node, moving_node) -> dict:
    """`fixed_segmentation`/`moving_segmentation`/`segment_names` from segmentation or labelmap nodes:
    segments paired by name, labelmaps by value."""
    if not check_pair(fixed_node, moving_node, "segmentations"):
        return {}
    (fixed, fixed_names), (moving, moving_names) = (labelmap_from_node(context, fixed_node),
                                                    labelmap_from_node(context, moving_node))
    return {"fixed_segmentation": fixed, "segment_names": fixed_names,
            "moving_segmentation": relabel_by_name(moving, moving_names, fixed_names)}


def load_segmentation_file(context: MRMLContext, path: Path, volume_node=None):
    """A segmentation node from a .seg.nrrd file or an RTSTRUCT (rasterised on `volume_node`), else a labelmap
    volume node."""
    if Path(path).is_file() and is_rtstruct(path):
        return load_rtstruct(context, path, volume_node)
    if Path(path).name.lower().endswith(".seg.nrrd"):
        return mrml_io.load_segmentation(context, path)
    return mrml_io.load_volume(context, path, labelmap=True)


def load_qa_files(context: MRMLContext, fixed_targets=None, moving_targets=None, fixed_segmentation=None,
                  moving_segmentation=None, volumes: tuple = (None, None)) -> dict:
    """Load the optional target markups and segmentation files into nodes, keyed as `register` takes them;
    RTSTRUCT files are rasterised on the (fixed, moving) `volumes` nodes."""
    check_pair(fixed_targets, moving_targets, "target files")
    check_pair(fixed_segmentation, moving_segmentation, "segmentation files")
    nodes = {}
    for name, path in (("fixed_targets", fixed_targets), ("moving_targets", moving_targets)):
        if path is not None:
            nodes[name] = mrml_io.load_markups(context, path)
    for name, path, volume in (("fixed_segmentation", fixed_segmentation, volumes[0]),
                               ("moving_segmentation", moving_segmentation, volumes[1])):
        if path is not None:
            nodes[name] = load_segmentation_file(context, path, volume)
    return nodes


def labelmap_from_node(context, node) -> tuple[sitk.Image, dict[int, str]]:
    """A labelmap image (LPS, world) from a labelmap volume or segmentation node, and its label names
    (segment names for a segmentation, the values themselves for a labelmap)."""
    if node.IsA("vtkMRMLSegmentationNode"):
        labelmap_node = context.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{node.GetName()} labels")
        if not context.segmentations.ExportAllSegmentsToLabelmapNode(node, labelmap_node):
            raise InputError(f"segmentation '{node.GetName()}' could not be exported to a labelmap")
        segmentation = node.GetSegmentation()
        names = {index + 1: segmentation.GetNthSegment(index).GetName()
                 for index in range(segmentation.GetNumberOfSegments())}
        image = sitk_from_volume(labelmap_node)
        context.scene.RemoveNode(labelmap_node)
        return image, names
    image = sitk_from_volume(node)
    return image, {value: str(value) for value in label_values(image)}


def mask_image(context: MRMLContext, node) -> sitk.Image:
    """A UInt8 image (LPS, world), 1 where any label or segment of `node` is, else 0: a user mask."""
    labels, _ = labelmap_from_node(context, node)
    return sitk.Cast(labels != 0, sitk.sitkUInt8)
