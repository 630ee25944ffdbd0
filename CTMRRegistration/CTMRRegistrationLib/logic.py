"""Registration on MRML nodes: the library class behind the Slicer module's logic and the CLI."""

from __future__ import annotations

import SimpleITK as sitk

from .errors import InputError
from .geometry import add_volume_from_sitk, sitk_from_volume, update_volume_from_sitk
from .imaging import guess_modality
from .masks import foreground_mask
from .pipeline import ProgressCallback, RegistrationOptions, RegistrationResult, register_images
from .scene import MRMLContext, default_context
from .transform_nodes import (
    as_grid,
    inverse_transform_node,
    new_transform_node,
    set_registration_references,
    set_transform_node_from_sitk,
)


def _top_of_transform_chain(node):
    """The node whose parent transform is the last one above `node` (itself when untransformed)."""
    while node.GetParentTransformNode() is not None:
        node = node.GetParentTransformNode()
    return node


def resample_on_fixed_grid(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """`moving` resampled on `fixed`'s grid through the fixed->moving `transform` (linear interpolation);
    outside the moving image the value is its minimum (air for CT, background for MR)."""
    background = float(sitk.GetArrayViewFromImage(moving).min())
    return sitk.Resample(moving, fixed, transform, sitk.sitkLinear, background, sitk.sitkFloat32)


class RegistrationLogic:
    """Registers a moving volume node to a fixed one in a scene, inside Slicer or headless."""

    def __init__(self, context: MRMLContext | None = None):
        self.context = context or default_context()

    def _mask_node(self, mask, volume_node):
        name = self.context.scene.GenerateUniqueName(f"{volume_node.GetName()} foreground")
        return add_volume_from_sitk(self.context, mask, name, labelmap=True)

    def foreground_mask_node(self, volume_node, modality: str | None = None):
        """A labelmap node (value 1) of the object in `volume_node`: CT body without table and air,
        or MR object without background and borders. `modality` 'CT' or 'MR' (default: guessed)."""
        image = sitk_from_volume(volume_node)
        return self._mask_node(foreground_mask(image, modality or guess_modality(image)), volume_node)

    def inverse_transform_node(self, transform_node, grid_reference_volume=None):
        """A new node with the inverse transform: exact for linear results; a deformable result's inverse is
        computed by Slicer on the fly, or sampled as a grid transform on `grid_reference_volume`."""
        return inverse_transform_node(self.context, transform_node, grid_reference_volume)

    def register(
        self,
        fixed_node,
        moving_node,
        output_transform_node=None,
        apply_to_moving: bool = True,
        harden: bool = False,
        output_volume_node=None,
        grid_transform: bool = False,
        progress: ProgressCallback | None = None,
        add_mask_nodes: bool = False,
        **options,
    ) -> RegistrationResult:
        """Register and store the result in a transform node (result.transform_node).

        Linear results give a vtkMRMLLinearTransformNode, deformable ones a B-spline transform node (a grid
        transform on the registration's 2 mm fixed grid with `grid_transform`); the node references the
        fixed and moving volumes. With `apply_to_moving`, it is placed on top of the moving volume's
        transform chain, so the moving volume shows aligned; `harden` then hardens it (linear: the volume's
        header changes, voxels are not resampled). `output_volume_node` receives the moving volume
        resampled on the fixed grid. With `add_mask_nodes`, the foreground masks the registration used become
        labelmap nodes (result.mask_nodes, keyed 'fixed' and 'moving') to inspect.
        `options` are the fields of RegistrationOptions (stages, initialization, backend, threads, ...).
        Nothing in the scene changes when registration fails or is cancelled.
        """
        if (output_transform_node is not None and output_transform_node.IsA("vtkMRMLLinearTransformNode")
                and "deformable" in options.get("stages", ())):
            raise InputError(f"'{output_transform_node.GetName()}' is a linear transform node: it cannot hold "
                             "a deformable result (choose a plain transform node or none)")
        fixed, moving = sitk_from_volume(fixed_node), sitk_from_volume(moving_node)
        result = register_images(fixed, moving, RegistrationOptions(**options), progress)
        if add_mask_nodes and result.fixed_mask is not None:
            result.mask_nodes = {
                "fixed": self._mask_node(result.fixed_mask, fixed_node),
                "moving": self._mask_node(result.moving_mask, moving_node),
            }
        if result.status != "ok":
            return result
        result.transform_node = self._store_transform(result, fixed_node, moving_node, output_transform_node,
                                                      grid_transform)
        if output_volume_node is not None:
            update_volume_from_sitk(output_volume_node, resample_on_fixed_grid(fixed, moving, result.transform))
        if apply_to_moving or harden:
            top = _top_of_transform_chain(moving_node)
            if top is not result.transform_node:
                top.SetAndObserveTransformNodeID(result.transform_node.GetID())
        if harden:
            self.context.transforms.hardenTransform(moving_node)
        return result

    def _store_transform(self, result, fixed_node, moving_node, node, grid_transform: bool):
        if node is None:
            node = new_transform_node(self.context, result.transform, f"{moving_node.GetName()} to "
                                      f"{fixed_node.GetName()}")
        else:
            set_transform_node_from_sitk(self.context, node, result.transform)
        if grid_transform and result.deformable:
            reference = add_volume_from_sitk(self.context, result.fixed_mask, "grid reference")
            node = as_grid(self.context, node, reference)
            self.context.scene.RemoveNode(reference)
        set_registration_references(node, fixed_node, moving_node)
        return node
