"""MRML nodes <-> SimpleITK images, matrices and points: volumes, linear transform nodes, markups.

MRML nodes are in RAS with "to parent" transforms; the library's images, points and resampling transforms are
in LPS (see core.geometry for the conventions)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkVector3d
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from ..core.errors import InputError
from ..core.geometry import RAS_FROM_LPS, flip_ras_lps, matrix_from_sitk, sitk_from_matrix


def numpy_from_vtk_matrix(matrix: vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtk_matrix_from_numpy(array: np.ndarray) -> vtkMatrix4x4:
    matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def parent_transforms(node) -> list:
    """The transform nodes above `node`, nearest first."""
    chain, parent = [], node.GetParentTransformNode()
    while parent is not None:
        chain.append(parent)
        parent = parent.GetParentTransformNode()
    return chain


def parent_to_world_matrix(node, leave_out=None) -> np.ndarray:
    """The 4x4 RAS matrix from a transformable node's local frame to world; error if non-linear.

    The transform node `leave_out`, when among the parents, is skipped (e.g. a registration's own output,
    which must not feed back into the next run)."""
    matrix = np.eye(4)
    for parent in parent_transforms(node):
        if parent is not leave_out:
            if not parent.IsLinear():
                raise InputError(f"'{node.GetName()}' is under a non-linear transform; harden it before registration")
            to_parent = vtkMatrix4x4()
            parent.GetMatrixTransformToParent(to_parent)
            matrix = numpy_from_vtk_matrix(to_parent) @ matrix
    return matrix


# ----- volumes -------------------------------------------------------------------------------------


def ijk_to_world_lps(volume_node, world: bool = True, leave_out=None) -> np.ndarray:
    """4x4 matrix from voxel index (i, j, k) to LPS; with `world`, through the parent transforms but
    `leave_out`."""
    ijk_to_ras = vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    matrix = numpy_from_vtk_matrix(ijk_to_ras)
    if world:
        matrix = parent_to_world_matrix(volume_node, leave_out) @ matrix
    return RAS_FROM_LPS @ matrix


def sitk_from_volume(volume_node, world: bool = True, leave_out=None) -> sitk.Image:
    """The volume's voxels and geometry as a SimpleITK image (LPS); parent transforms but `leave_out`
    applied."""
    image_data = volume_node.GetImageData() if volume_node is not None else None
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        name = volume_node.GetName() if volume_node is not None else "(none)"
        raise InputError(f"volume '{name}' has no image data")
    dims = image_data.GetDimensions()
    components = image_data.GetNumberOfScalarComponents()
    matrix = ijk_to_world_lps(volume_node, world, leave_out)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    geometry = (spacing.tolist(), (matrix[:3, :3] / spacing).ravel().tolist(), matrix[:3, 3].tolist())
    shared = getattr(image_data.GetPointData().GetScalars(), _SHARED_IMAGE, None)
    if shared is not None and all(np.allclose(a, b, rtol=0, atol=1e-9) for a, b in zip(
            geometry, (shared.GetSpacing(), shared.GetDirection(), shared.GetOrigin()))):
        return shared
    scalars = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    shape = tuple(reversed(dims)) + ((components,) if components > 1 else ())
    image = sitk.GetImageFromArray(scalars.reshape(shape), isVector=components > 1)  # copies the voxels
    image.SetSpacing(geometry[0])
    image.SetDirection(geometry[1])
    image.SetOrigin(geometry[2])
    return image


_SHARED_IMAGE = "_ctmr_shared_image"  # on a node's scalars: the SimpleITK image whose voxels they view


def share_voxels(volume_node) -> sitk.Image:
    """Hold a volume's voxels once: copy them into a SimpleITK image and make the node's scalars a view of it,
    so that `sitk_from_volume` returns that image without a copy while the node's voxels and geometry stay as
    they are (a full-resolution CT is hundreds of MB). For nodes the library reads from files for its own use:
    the image is handed out as it is, so no caller may change its voxels."""
    image = sitk_from_volume(volume_node)
    scalars = volume_node.GetImageData().GetPointData().GetScalars()
    components = image.GetNumberOfComponentsPerPixel()
    view = numpy_support.numpy_to_vtk(sitk.GetArrayViewFromImage(image).reshape(-1, components), deep=False)
    setattr(view, _SHARED_IMAGE, image)  # keeps the image alive as long as the node's scalars are the view
    view.SetName(scalars.GetName())
    volume_node.GetImageData().GetPointData().SetScalars(view)
    return image


def update_volume_from_sitk(volume_node, image: sitk.Image) -> None:
    """Replace a volume node's voxels and geometry with a SimpleITK image (LPS, world frame)."""
    array = sitk.GetArrayViewFromImage(image)
    components = image.GetNumberOfComponentsPerPixel()
    image_data = vtkImageData()
    image_data.SetDimensions(image.GetSize())
    vtk_array = numpy_support.numpy_to_vtk(
        np.ascontiguousarray(array).reshape(-1, components), deep=True
    )
    image_data.GetPointData().SetScalars(vtk_array)
    spacing = np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * spacing
    ijk_to_lps[:3, 3] = image.GetOrigin()
    world_from_parent = np.linalg.inv(parent_to_world_matrix(volume_node))
    volume_node.SetIJKToRASMatrix(vtk_matrix_from_numpy(world_from_parent @ RAS_FROM_LPS @ ijk_to_lps))
    volume_node.SetAndObserveImageData(image_data)


def add_volume_from_sitk(context, image: sitk.Image, name: str, labelmap: bool = False, display: bool = True):
    """A new scalar (or labelmap) volume node in the context's scene holding `image`; with `display`, its
    display nodes (a labelmap always has them)."""
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = context.scene.AddNewNodeByClass(class_name, name)
    update_volume_from_sitk(node, image)
    if display or labelmap:
        node.CreateDefaultDisplayNodes()
    if labelmap:
        node.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeLabels")
    return node


# ----- transforms ----------------------------------------------------------------------------------


def sitk_from_linear_transform_node(transform_node, world: bool = True) -> sitk.AffineTransform:
    """The resampling transform (fixed LPS -> moving LPS) of a linear transform node, to world (or, without
    `world`, to its parent)."""
    if not (transform_node.IsTransformToWorldLinear() if world else transform_node.IsLinear()):
        raise InputError(f"transform '{transform_node.GetName()}' is not linear")
    to_world = vtkMatrix4x4()
    if world:
        transform_node.GetMatrixTransformToWorld(to_world)
    else:
        transform_node.GetMatrixTransformToParent(to_world)
    return sitk_from_matrix(flip_ras_lps(np.linalg.inv(numpy_from_vtk_matrix(to_world))))


def set_linear_transform_node_from_sitk(transform_node, transform: sitk.Transform) -> None:
    """Set a linear transform node so that it moves the moving volume onto the fixed one.

    `transform` is a resampling transform (fixed LPS -> moving LPS). Any parent transform of the
    node is taken into account, so the node's transform to world equals the inverse of `transform`.
    """
    to_world = flip_ras_lps(np.linalg.inv(matrix_from_sitk(transform)))
    local = np.linalg.inv(parent_to_world_matrix(transform_node)) @ to_world
    transform_node.SetMatrixTransformToParent(vtk_matrix_from_numpy(local))


# ----- markups -------------------------------------------------------------------------------------


def points_from_markups(markups_node, leave_out=None) -> np.ndarray:
    """World positions (LPS, N x 3) of a markups node's control points, parent transforms applied; when the
    transform node `leave_out` is among them, every parent but that one."""
    chain = parent_transforms(markups_node)
    points = np.zeros((markups_node.GetNumberOfControlPoints(), 3))
    for index in range(len(points)):
        point = [0.0, 0.0, 0.0]
        if leave_out is None or leave_out not in chain:
            markups_node.GetNthControlPointPositionWorld(index, point)
        else:
            markups_node.GetNthControlPointPosition(index, point)
            for parent in chain:
                if parent is not leave_out:
                    point = parent.GetTransformToParent().TransformPoint(point)
        points[index] = point
    return points * RAS_FROM_LPS[:3, :3].diagonal()


def labels_from_markups(markups_node) -> list[str]:
    return [markups_node.GetNthControlPointLabel(i) for i in range(markups_node.GetNumberOfControlPoints())]


def set_markups_from_points(markups_node, points_lps: np.ndarray, labels=None) -> None:
    """Replace the control points of a markups node by world positions given in LPS."""
    markups_node.RemoveAllControlPoints()
    for index, point in enumerate(np.asarray(points_lps, dtype=float)):
        ras = [-point[0], -point[1], point[2]]
        label = labels[index] if labels is not None else ""
        new_index = markups_node.AddControlPoint(vtkVector3d(0, 0, 0), label)
        markups_node.SetNthControlPointPositionWorld(new_index, ras)
