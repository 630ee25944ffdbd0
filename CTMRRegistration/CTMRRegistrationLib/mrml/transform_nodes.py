"""SimpleITK resampling transforms <-> MRML transform nodes: linear, B-spline (composite) and grid."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk
import slicer

from ..core.errors import InputError
from ..core.private_folders import private_folder
from ..elastix.transforms import compose, is_linear
from .nodes import parent_transforms, set_linear_transform_node_from_sitk, sitk_from_linear_transform_node
from .scene import MRMLContext


def _read_into(context: MRMLContext, node, path: Path) -> None:
    storage = context.scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    storage.SetFileName(str(path))
    try:
        if not storage.ReadData(node):
            raise InputError(f"cannot store the transform in '{node.GetName()}'")
    finally:
        context.scene.RemoveNode(storage)


def set_transform_node_from_sitk(context: MRMLContext, node, transform: sitk.Transform) -> None:
    """Store a fixed->moving resampling transform (LPS) in `node` so that it moves the moving volume onto the
    fixed one. Linear transforms become the node's matrix (parent transforms accounted for); others are
    read through an ITK transform file, as Slicer loads them (B-spline stays B-spline, fields stay grids)."""
    if is_linear(transform):
        set_linear_transform_node_from_sitk(node, transform)
        return
    if node.GetParentTransformNode() is not None:
        raise InputError(f"'{node.GetName()}' is under a transform: a deformable result needs a top-level node")
    with private_folder("transform") as folder:
        path = folder / "transform.h5"
        sitk.WriteTransform(transform, str(path))
        _read_into(context, node, path)


def new_transform_node(context: MRMLContext, transform: sitk.Transform, name: str):
    """A new node holding `transform`: vtkMRMLLinearTransformNode when linear, else vtkMRMLTransformNode."""
    class_name = "vtkMRMLLinearTransformNode" if is_linear(transform) else "vtkMRMLTransformNode"
    node = context.scene.AddNewNodeByClass(class_name, context.scene.GenerateUniqueName(name))
    set_transform_node_from_sitk(context, node, transform)
    return node


def sitk_from_transform_node(context: MRMLContext, node) -> sitk.Transform:
    """The fixed->moving resampling transform (LPS) of any transform node, parent transforms included when
    linear; a non-linear node must be top-level."""
    if node.IsTransformToWorldLinear():
        return sitk_from_linear_transform_node(node)
    if node.GetParentTransformNode() is not None:
        raise InputError(f"'{node.GetName()}' is a non-linear transform under another transform: harden it first")
    with private_folder("transform") as folder:
        path = folder / "transform.h5"
        storage = context.scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
        storage.SetFileName(str(path))
        written = storage.WriteData(node)
        context.scene.RemoveNode(storage)
        if not written:
            raise InputError(f"cannot convert transform '{node.GetName()}'")
        try:
            return sitk.ReadTransform(str(path))
        except RuntimeError as error:
            raise InputError(f"'{node.GetName()}' is not an ITK transform (an inverted B-spline?)") from error


def _own_transform(context: MRMLContext, node) -> sitk.Transform:
    """`node`'s own resampling transform, without its parents."""
    if node.IsLinear():
        return sitk_from_linear_transform_node(node, world=False)
    alone = context.scene.AddNewNodeByClass(node.GetClassName())
    try:
        alone.CopyContent(node)
        alone.SetAndObserveTransformNodeID(None)
        return sitk_from_transform_node(context, alone)
    finally:
        context.scene.RemoveNode(alone)


def flatten_transform_chain(context: MRMLContext, node, name: str | None = None):
    """A new top-level node doing what `node` and all its parent transforms do together, e.g. a landmark
    transform placed under an intensity registration's result: exact matrix when all are linear, else one
    composite transform (B-splines stay B-splines)."""
    transform = _own_transform(context, node)
    for parent in parent_transforms(node):
        transform = compose(_own_transform(context, parent), transform)
    return new_transform_node(context, transform, name or f"{node.GetName()} composed")


def inverse_transform_node(context: MRMLContext, node, grid_reference=None):
    """A new node with the inverse of `node`: exact for linear transforms; for non-linear ones Slicer inverts
    on the fly, or, with `grid_reference` (a volume node), the inverse is sampled as a grid transform on it."""
    inverse = context.scene.AddNewNodeByClass(
        node.GetClassName(), context.scene.GenerateUniqueName(f"{node.GetName()} inverse")
    )
    inverse.CopyContent(node)
    inverse.Inverse()
    return inverse if grid_reference is None or inverse.IsLinear() else as_grid(context, inverse, grid_reference)


def as_grid(context: MRMLContext, node, reference_volume):
    """Replace a non-linear transform node by a grid (displacement field) node sampled on `reference_volume`."""
    grid = context.transforms.ConvertToGridTransform(node, reference_volume)
    name = node.GetName()
    context.scene.RemoveNode(node)
    grid.SetName(name)
    return grid


def set_registration_references(transform_node, fixed_node, moving_node) -> None:
    """Record which volumes a registration result belongs to, as SlicerElastix does."""
    transform_node.SetNodeReferenceID(slicer.vtkMRMLTransformNode.GetFixedNodeReferenceRole(), fixed_node.GetID())
    transform_node.SetNodeReferenceID(slicer.vtkMRMLTransformNode.GetMovingNodeReferenceRole(), moving_node.GetID())
