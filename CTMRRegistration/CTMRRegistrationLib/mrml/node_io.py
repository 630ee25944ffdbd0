"""Load and save MRML nodes through their storage nodes: volumes, labelmaps, markups, transforms,
segmentations. A failure to read is an InputError, to write an OutputError, each with a one-line reason;
volume files are checked whole before reading and every file is written atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import SimpleITK as sitk
import slicer

from ..core.errors import InputError
from ..core.image_files import check_volume_file, check_written_volume
from ..core.input_files import TEXT_LIMIT_BYTES, regular_file
from ..core.output_files import native_stderr_held, write_atomically
from ..core.private_folders import private_folder
from .scene import MRMLContext

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
MARKUPS_SUFFIXES = (".mrk.json", ".json", ".fcsv")
TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt", ".mat")
TRANSFORM_OUTPUT_SUFFIXES = (".h5", ".tfm", ".txt")  # what ITK writes that Slicer and elastix users read
SEGMENTATION_SUFFIXES = (".seg.nrrd", ".seg.nii.gz", ".nrrd", ".nii.gz", ".nii")


def _existing_file(path, kind: str, suffixes: tuple[str, ...]) -> Path:
    path = Path(path)
    limit = TEXT_LIMIT_BYTES if kind == "markups" else None  # ITK and VTK read the binary formats boundedly
    regular_file(path, kind, limit)
    if not path.name.lower().endswith(suffixes):
        raise InputError(f"{path.name}: not a {kind} file (expected {', '.join(suffixes)})")
    return path


def _first_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "unreadable or unsupported format"


def _node_name(path: Path) -> str:
    name = path.name
    for suffix in (".seg.nrrd", ".mrk.json", ".nii.gz") + VOLUME_SUFFIXES + TRANSFORM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read(context: MRMLContext, node, storage_class: str, path: Path, kind: str, source: Path | None = None) -> None:
    """Read `node` from `path`; its storage node then names `source` (the user's file `path` is a copy of)."""
    storage = context.scene.AddNewNodeByClass(storage_class)
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        reason = _first_line(storage.GetUserMessages().GetAllMessagesAsString())
        context.scene.RemoveNode(node)
        context.scene.RemoveNode(storage)
        raise InputError(f"cannot read {kind} {(source or path).name}: {reason}")
    storage.SetFileName(str(source or path))


def load_volume(context: MRMLContext, path, labelmap: bool = False, name: str | None = None):
    """A scalar (or labelmap) volume node read from .nrrd, .nii(.gz) or .mha/.mhd. A scalar volume has no display
    node: whoever shows it makes one (`CreateDefaultDisplayNodes`; its automatic window reads every voxel)."""
    path = _existing_file(path, "volume", VOLUME_SUFFIXES)
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    with private_folder("read") as folder:
        readable = check_volume_file(path, folder)  # a compressed NIfTI is decompressed once, into `folder`
        node = context.scene.AddNewNodeByClass(class_name, name or _node_name(path))
        _read(context, node, "vtkMRMLVolumeArchetypeStorageNode", readable, "volume", path)
    if labelmap:
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeLabels")
    return node


def load_transform(context: MRMLContext, path):
    """A transform node (linear, B-spline, grid or composite) read from an ITK transform file."""
    path = _existing_file(path, "transform", TRANSFORM_SUFFIXES)
    messages = slicer.vtkMRMLMessageCollection()
    node = context.transforms.AddTransform(str(path), context.scene, messages)
    if node is None:
        raise InputError(f"cannot read transform {path.name}: {_first_line(messages.GetAllMessagesAsString())}")
    return node


def load_markups(context: MRMLContext, path, name: str | None = None):
    """A point list read from .mrk.json or .fcsv."""
    path = _existing_file(path, "markups", MARKUPS_SUFFIXES)
    messages = slicer.vtkMRMLMessageCollection()
    node_id = context.markups.LoadMarkups(str(path), name or _node_name(path), messages)
    if not node_id:
        raise InputError(f"cannot read markups {path.name}: {_first_line(messages.GetAllMessagesAsString())}")
    return context.scene.GetNodeByID(node_id)


def load_segmentation(context: MRMLContext, path, name: str | None = None):
    """A segmentation node read from .seg.nrrd (or a labelmap file, one segment per label)."""
    path = _existing_file(path, "segmentation", SEGMENTATION_SUFFIXES)
    messages = slicer.vtkMRMLMessageCollection()
    node = context.segmentations.LoadSegmentationFromFile(str(path), True, name or _node_name(path), None, messages)
    if node is None:
        raise InputError(f"cannot read segmentation {path.name}: {_first_line(messages.GetAllMessagesAsString())}")
    return node


def _storage_node_for(context: MRMLContext, node, path: Path):
    """The node's storage node if it writes this file type, else a new one that does."""
    storage = node.GetStorageNode()
    if storage is not None and storage.SupportedFileType(str(path)):
        return storage
    if path.name.lower().endswith(".fcsv"):
        storage = context.scene.CreateNodeByClass("vtkMRMLMarkupsFiducialStorageNode")
    else:
        storage = node.CreateDefaultStorageNode()
    context.scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    return storage


def _verify(node, path: Path) -> None:
    """Read a written file back: volumes whole (see check_written_volume), transforms readable by ITK."""
    if node.IsA("vtkMRMLVolumeNode") and not node.IsA("vtkMRMLSegmentationNode"):
        check_written_volume(path)
    elif node.IsA("vtkMRMLTransformNode"):
        sitk.ReadTransform(str(path))


def save_node(context: MRMLContext, node, path) -> Path:
    """Write a node through a storage node, atomically (see core.output_files); the file format follows the
    extension. OutputError, with nothing at `path`, when the file cannot be written whole."""
    path = Path(path)
    storage = _storage_node_for(context, node, path)

    held: list[str] = []

    def write(temporary: Path) -> None:
        storage.SetFileName(str(temporary))
        with native_stderr_held() as printed:
            written = storage.WriteData(node)
        held.extend(printed)
        if not written:  # a one-line error replaces the libraries' diagnostics
            raise RuntimeError(_first_line(storage.GetUserMessages().GetAllMessagesAsString()))

    try:
        write_atomically(path, write, lambda temporary: _verify(node, temporary))
    finally:
        storage.SetFileName(str(path))
    if "".join(held).strip():
        print("".join(held), end="", file=sys.stderr)  # warnings of a write that worked
    return path
