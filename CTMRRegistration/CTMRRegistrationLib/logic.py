"""Registration on MRML nodes: the library class behind the Slicer module's logic and the CLI."""

from __future__ import annotations

from .geometry import add_volume_from_sitk, set_linear_transform_node_from_sitk, sitk_from_volume
from .imaging import guess_modality
from .masks import foreground_mask
from .pipeline import ProgressCallback, RegistrationOptions, RegistrationResult, register_images
from .scene import MRMLContext, default_context


def _top_of_transform_chain(node):
    """The node whose parent transform is the last one above `node` (itself when untransformed)."""
    while node.GetParentTransformNode() is not None:
        node = node.GetParentTransformNode()
    return node


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

    def register(
        self,
        fixed_node,
        moving_node,
        output_transform_node=None,
        apply_to_moving: bool = True,
        progress: ProgressCallback | None = None,
        add_mask_nodes: bool = False,
        **options,
    ) -> RegistrationResult:
        """Register and store the result in a linear transform node (result.transform_node).

        With `apply_to_moving`, the transform node is placed on top of the moving volume's transform
        chain, so the moving volume shows aligned with the fixed one; nothing is resampled or hardened.
        With `add_mask_nodes`, the foreground masks the registration used become labelmap nodes
        (result.mask_nodes, keyed 'fixed' and 'moving') to inspect.
        `options` are the fields of RegistrationOptions (initialization, threads, ...).
        """
        result = register_images(
            sitk_from_volume(fixed_node), sitk_from_volume(moving_node), RegistrationOptions(**options), progress
        )
        if add_mask_nodes and result.fixed_mask is not None:
            result.mask_nodes = {
                "fixed": self._mask_node(result.fixed_mask, fixed_node),
                "moving": self._mask_node(result.moving_mask, moving_node),
            }
        if result.status != "ok":
            return result
        scene = self.context.scene
        if output_transform_node is None:
            output_transform_node = scene.AddNewNodeByClass(
                "vtkMRMLLinearTransformNode",
                scene.GenerateUniqueName(f"{moving_node.GetName()} to {fixed_node.GetName()}"),
            )
        set_linear_transform_node_from_sitk(output_transform_node, result.transform)
        if apply_to_moving:
            top = _top_of_transform_chain(moving_node)
            if top is not output_transform_node:
                top.SetAndObserveTransformNodeID(output_transform_node.GetID())
        result.transform_node = output_transform_node
        return result
