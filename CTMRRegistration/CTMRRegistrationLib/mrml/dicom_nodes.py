"""DICOM on MRML nodes: volume nodes from DICOM series with the attributes Slicer's DICOM module sets, the
modality a node carries, and RTSTRUCT files as segmentation nodes on a volume's grid."""

from __future__ import annotations

import SimpleITK as sitk
import slicer

from ..core.errors import InputError
from ..core.imaging import DICOM_MODALITY_TAG
from ..dicom.inputs import is_dicom_input, read_dicom_input
from ..dicom.registration_objects import write_registration_object
from ..dicom.rtstruct import rasterise_structure_set
from ..dicom.series import DicomSeries, series_from_files
from . import node_io as mrml_io
from .nodes import add_volume_from_sitk, share_voxels, sitk_from_volume
from .scene import MRMLContext

INSTANCE_UIDS = "DICOM.instanceUIDs"  # set by Slicer's DICOM module on every volume it loads
MODALITY = "DICOM.Modality"
FRAME_OF_REFERENCE = "DICOM.FrameOfReferenceUID"


def load_dicom_volume(context: MRMLContext, path, series_uid: str | None = None, role: str = "input"
                      ) -> tuple[object, DicomSeries]:
    """A scalar volume node of one DICOM series (folder or file) and the series; the node carries the series'
    instance UIDs, modality and frame of reference as attributes."""
    image, series = read_dicom_input(path, series_uid, role)
    node = add_volume_from_sitk(context, image, series.description or f"{series.modality} {role}", display=False)
    node.SetAttribute(INSTANCE_UIDS, " ".join(series.sop_instance_uids))
    node.SetAttribute(MODALITY, series.modality)
    node.SetAttribute(FRAME_OF_REFERENCE, series.frame_of_reference_uid)
    return node, series


def load_input_volume(context: MRMLContext, path, series_uid: str | None = None, role: str = "input"
                      ) -> tuple[object, DicomSeries | None]:
    """A volume node from a DICOM folder or file (with its series) or from a volume file (series None), without
    display nodes; its voxels are held once, shared with the SimpleITK image the library reads from it
    (`share_voxels`)."""
    if is_dicom_input(path):
        node, series = load_dicom_volume(context, path, series_uid, role)
    elif series_uid is not None:
        raise InputError(f"a {role} series UID is given but {path} is not DICOM")
    else:
        node, series = mrml_io.load_volume(context, path), None
    share_voxels(node)
    return node, series


def node_modality(volume_node) -> str | None:
    """The DICOM modality of a volume node: our attribute, else the DICOM database of Slicer's DICOM module
    (through the node's first instance UID); None when the node did not come from DICOM."""
    modality = volume_node.GetAttribute(MODALITY)
    if modality:
        return modality.strip().upper()
    uids = (volume_node.GetAttribute(INSTANCE_UIDS) or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    if not uids or database is None or not database.isOpen:
        return None
    path = database.fileForInstance(uids[0])
    return (database.fileValue(path, "0008,0060") or "").strip().upper() or None if path else None


def tag_modality(image: sitk.Image, volume_node) -> sitk.Image:
    """`image` with the node's DICOM modality as its (0008,0060) tag, which the pipeline's modality detection
    reads; unchanged when the node has none."""
    modality = node_modality(volume_node)
    if modality:
        image.SetMetaData(DICOM_MODALITY_TAG, modality)
    return image


def load_rtstruct(context: MRMLContext, path, reference_node):
    """A segmentation node of an RTSTRUCT's ROIs (named as in the file), rasterised on `reference_node`'s grid."""
    if reference_node is None:
        raise InputError("an RTSTRUCT needs the volume it outlines, to be rasterised on its grid")
    labels, names = rasterise_structure_set(path, sitk_from_volume(reference_node),
                                            reference_node.GetAttribute(FRAME_OF_REFERENCE))
    labelmap = add_volume_from_sitk(context, labels, "rtstruct labels", labelmap=True)
    segmentation = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{reference_node.GetName()} RTSTRUCT")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    imported = context.segmentations.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    context.scene.RemoveNode(labelmap)
    segments = segmentation.GetSegmentation()
    present = [value for value in sorted(names) if (sitk.GetArrayViewFromImage(labels) == value).any()]
    if not imported or segments.GetNumberOfSegments() != len(present):
        raise InputError(f"the RTSTRUCT could not be turned into segments on '{reference_node.GetName()}'")
    for index, value in enumerate(present):
        segments.GetNthSegment(index).SetName(names[value])
    return segmentation


def series_of_node(volume_node) -> DicomSeries:
    """The DICOM series a volume was loaded from by Slicer's DICOM module: its instance UIDs' files, found in the
    DICOM database."""
    uids = (volume_node.GetAttribute(INSTANCE_UIDS) or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    if not uids or database is None or not database.isOpen:
        raise InputError(f"'{volume_node.GetName()}' was not loaded through the DICOM database: a DICOM registration "
                         "object needs both volumes from DICOM")
    files = [database.fileForInstance(uid) for uid in uids]
    if not all(files):
        raise InputError(f"the DICOM database lacks files of '{volume_node.GetName()}'")
    return series_from_files(files)


def export_dicom_registration(path, result, fixed_node, moving_node, allow_failed: bool = False):
    """Write a registration result (linear: REG, deformable: Deformable REG) between two volumes loaded by Slicer's
    DICOM module; its grid, for a deformable result, over the fixed volume. A result whose verdict is failed
    needs `allow_failed`."""
    return write_registration_object(path, result.transform, series_of_node(fixed_node), series_of_node(moving_node),
                                     sitk_from_volume(fixed_node), result.verdict, allow_failed)
