"""The command-line outputs checked before any work: each a supported file type in a writable folder on a
device with free space, none a folder, a device or an input, no two the same."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError
from ..core.output_files import check_output_file, check_output_folder
from ..mrml.node_io import TRANSFORM_OUTPUT_SUFFIXES as TRANSFORM_SUFFIXES

VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")
FILE_OUTPUTS = {
    "output_transform": TRANSFORM_SUFFIXES, "output_inverse_transform": TRANSFORM_SUFFIXES,
    "output_volume": VOLUME_SUFFIXES, "output_elastix_transform": (".txt",), "overlay": (".png",),
    "output_crop_roi": (".mrk.json",), "output_dicom_reg": (".dcm",),
}
FOLDER_OUTPUTS = ("report", "output_masks", "output_stage_transforms")
INPUTS = ("fixed", "moving", "transform", "backward_transform", "fixed_landmarks", "moving_landmarks",
          "fixed_targets", "moving_targets", "fixed_seg", "moving_seg", "elastix", "crop_roi",
          "fixed_mask", "moving_mask", "initial_transform")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_outputs(args) -> None:
    """InputError naming the option when an output of `args` (argparse namespace) cannot be written."""
    inputs = [Path(getattr(args, name)) for name in INPUTS if getattr(args, name, None) is not None]
    inputs += [Path(path) for path in getattr(args, "preset", [])]
    seen: dict[Path, str] = {}
    for name, suffixes in FILE_OUTPUTS.items():
        path = getattr(args, name, None)
        if path is None:
            continue
        check_output_file(path, _option(name), suffixes, inputs)
        key = Path(path).resolve()
        if key in seen:
            raise InputError(f"{_option(name)} and {seen[key]} name the same file {path}")
        seen[key] = _option(name)
    for name in FOLDER_OUTPUTS:
        if getattr(args, name, None) is not None:
            check_output_folder(getattr(args, name), _option(name), inputs)
