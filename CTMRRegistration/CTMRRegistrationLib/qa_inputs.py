"""Ground truth for quality assessment taken from MRML nodes or files: paired target points and paired
segmentations, in the keyword form `qa.assess` takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import mrml_io
from .correspondence import order_by_labels
from .errors import InputError
from .geometry import labels_from_markups
from .landmark_registration import markups_points
from .scene import MRMLContext
from .segmentation_metrics import labelmap_from_node, relabel_by_name


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
    fixed = markups_points(fixed_markups, leave_out)
    moving = markups_points(moving_markups, leave_out)
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


def load_segmentation_file(context: MRMLContext, path: Path):
    """A segmentation node from a .seg.nrrd file, else a labelmap volume node."""
    if Path(path).name.lower().endswith(".seg.nrrd"):
        return mrml_io.load_segmentation(context, path)
    return mrml_io.load_volume(context, path, labelmap=True)


def load_qa_files(context: MRMLContext, fixed_targets=None, moving_targets=None, fixed_segmentation=None,
                  moving_segmentation=None) -> dict:
    """Load the optional target markups and segmentation files into nodes, keyed as `register` takes them."""
    check_pair(fixed_targets, moving_targets, "target files")
    check_pair(fixed_segmentation, moving_segmentation, "segmentation files")
    nodes = {}
    for name, path in (("fixed_targets", fixed_targets), ("moving_targets", moving_targets)):
        if path is not None:
            nodes[name] = mrml_io.load_markups(context, path)
    for name, path in (("fixed_segmentation", fixed_segmentation), ("moving_segmentation", moving_segmentation)):
        if path is not None:
            nodes[name] = load_segmentation_file(context, path)
    return nodes
