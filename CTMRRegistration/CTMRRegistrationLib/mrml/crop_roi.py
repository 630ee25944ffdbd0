"""The region a registration works on as a markups ROI node, and cropped volumes made by Slicer's Crop Volume.

A run leaves the fixed-space region it registered as an ROI (oriented like the fixed image's grid); the user
can move or resize it and register again with it (`crop_roi`), or make cropped copies of the volumes the way
the Crop Volume module does (voxel-based: voxels keep their positions)."""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from ..core.geometry import RAS_FROM_LPS, transform_points
from .nodes import numpy_from_vtk_matrix, vtk_matrix_from_numpy
from .scene import MRMLContext

_SIGNS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])


def roi_corners(roi_node) -> np.ndarray:
    """The 8 world corners (LPS) of an ROI node."""
    if roi_node is None or not roi_node.IsA("vtkMRMLMarkupsROINode"):
        raise InputError("the crop region must be a markups ROI node")
    if roi_node.GetNumberOfControlPoints() == 0:
        raise InputError(f"ROI '{roi_node.GetName()}' is not placed")
    object_to_world = numpy_from_vtk_matrix(roi_node.GetObjectToWorldMatrix())
    corners_ras = transform_points(object_to_world, _SIGNS * np.asarray(roi_node.GetSize()))
    return corners_ras * RAS_FROM_LPS[:3, :3].diagonal()


def set_roi_corners(roi_node, corners_lps: np.ndarray) -> None:
    """Place an ROI node on a box given by its 8 corners (LPS) in the order x, then y, then z from low to
    high (as core.imaging.physical_corners gives them); oriented like the box's edges."""
    corners = np.asarray(corners_lps, dtype=float) * RAS_FROM_LPS[:3, :3].diagonal()
    edges = np.stack([corners[4] - corners[0], corners[2] - corners[0], corners[1] - corners[0]], axis=1)
    sizes = np.linalg.norm(edges, axis=0)
    axes = edges / np.where(sizes > 0, sizes, 1.0)
    if np.linalg.det(axes) < 0:
        axes[:, 2] *= -1.0
    object_to_node = np.eye(4)
    object_to_node[:3, :3], object_to_node[:3, 3] = axes, corners.mean(axis=0)
    roi_node.SetAndObserveObjectToNodeMatrix(vtk_matrix_from_numpy(object_to_node))
    roi_node.SetCenter(*corners.mean(axis=0))
    roi_node.SetSize(*sizes)


def roi_from_corners(context: MRMLContext, corners_lps: np.ndarray, name: str):
    """A new ROI node on the box with these corners (see set_roi_corners)."""
    roi = context.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", context.scene.GenerateUniqueName(name))
    set_roi_corners(roi, corners_lps)
    return roi


def cropped_volume(context: MRMLContext, volume_node, roi_node, name: str | None = None):
    """A new volume holding the voxels of `volume_node` inside `roi_node`, made by the Crop Volume logic
    (voxel-based, no resampling)."""
    scene = context.scene
    parameters = scene.AddNewNodeByClass("vtkMRMLCropVolumeParametersNode")
    output = scene.AddNewNodeByClass(volume_node.GetClassName(),
                                     scene.GenerateUniqueName(name or f"{volume_node.GetName()} cropped"))
    try:
        parameters.SetInputVolumeNodeID(volume_node.GetID())
        parameters.SetROINodeID(roi_node.GetID())
        parameters.SetOutputVolumeNodeID(output.GetID())
        parameters.SetVoxelBased(True)
        context.crop_volume.Apply(parameters)
    finally:
        scene.RemoveNode(parameters)
    if output.GetImageData() is None or output.GetImageData().GetNumberOfPoints() == 0:
        scene.RemoveNode(output)
        raise InputError(f"ROI '{roi_node.GetName()}' does not cover '{volume_node.GetName()}'")
    return output
