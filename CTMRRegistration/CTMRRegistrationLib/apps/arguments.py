"""The command-line options of `ctmr-register` and `ctmr-qa`, defined once, and their checks before any work.

Each option is the kebab-case form of its RegistrationLogic.register keyword (and of the panel's parameter,
in camelCase); old names still work with a warning."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import InputError
from ..core.imaging import MODALITIES
from ..core.masks import MASK_MODES
from ..core.output_files import check_output_file, check_output_folder
from ..core.output_plan import check_output_plan
from ..dicom.inputs import is_dicom_input
from ..elastix.backends import BACKENDS, ElastixBackend, choose_backend
from ..mrml.node_io import TRANSFORM_OUTPUT_SUFFIXES
from ..qa.report import report_file_names

VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")
FILE_OUTPUTS = {
    "output_transform": TRANSFORM_OUTPUT_SUFFIXES, "output_inverse_transform": TRANSFORM_OUTPUT_SUFFIXES,
    "output_volume": VOLUME_SUFFIXES, "output_elastix_transform": (".txt",), "overlay": (".png",),
    "registered_region": (".mrk.json",), "output_dicom_reg": (".dcm",),
}
FOLDER_OUTPUTS = ("report_folder", "output_masks", "output_stage_transforms")
INPUTS = ("fixed", "moving", "transform", "backward_transform", "fixed_landmarks", "moving_landmarks",
          "fixed_targets", "moving_targets", "fixed_segmentation", "moving_segmentation", "elastix_executable",
          "crop_roi", "fixed_mask", "moving_mask", "initial_transform")


def renamed(new: str, flag_value=None) -> type[argparse.Action]:
    """The action of an old option name: a warning naming `new`, then the value stored as `new` stores it
    (`flag_value` for an old flag that takes no value)."""

    class Renamed(argparse.Action):
        def __init__(self, option_strings, dest, **keywords):
            if flag_value is not None:
                keywords["nargs"] = 0
            super().__init__(option_strings, dest, **keywords)

        def __call__(self, parser, namespace, values, option_string=None):
            print(f"{parser.prog}: warning: {option_string} is deprecated, use {new}", file=sys.stderr)
            setattr(namespace, self.dest, flag_value if flag_value is not None else values)

    return Renamed


def add_renamed(parser: argparse.ArgumentParser, old: str, new: str, flag_value=None, dest: str | None = None,
                **keywords) -> None:
    """Accept the old option name `old` for `new` (stored in `dest`, by default new's), hidden from --help."""
    dest = dest or new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, action=renamed(new, flag_value), help=argparse.SUPPRESS, **keywords)


def add_pair(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--fixed", type=Path, required=required, help="fixed volume (.nrrd, .nii, .nii.gz, .mha) "
                        "or a folder of DICOM files")
    parser.add_argument("--moving", type=Path, required=required, help="moving volume or DICOM folder")


def add_modalities(parser: argparse.ArgumentParser) -> None:
    for role in ("fixed", "moving"):
        parser.add_argument(f"--{role}-modality", choices=MODALITIES, help="override the detected modality")


def add_ground_truth(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fixed-targets", type=Path, help="independent target points in FIXED (.mrk.json, .fcsv), "
                        "for the target registration error")
    parser.add_argument("--moving-targets", type=Path, help="the same targets in MOVING")
    parser.add_argument("--fixed-segmentation", type=Path, help="segmentation of FIXED (.seg.nrrd, labelmap, or "
                        "RTSTRUCT paired by ROI name), for Dice and surface distances")
    parser.add_argument("--moving-segmentation", type=Path, help="segmentation of MOVING")
    for role in ("fixed", "moving"):
        add_renamed(parser, f"--{role}-seg", f"--{role}-segmentation", type=Path)


def add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report-folder", type=Path, help="folder for the HTML quality report and its pictures")
    add_renamed(parser, "--report", "--report-folder", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON object with the result to stdout")


def add_elastix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="threads for elastix and ITK (default: all)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="elastix executable, the itk-elastix wheel, or auto: an executable when one is found")
    parser.add_argument("--elastix-executable", type=Path, help="elastix executable or its folder (default: "
                        "$CTMR_ELASTIX, PATH, else the itk-elastix wheel)")
    add_renamed(parser, "--elastix", "--elastix-executable", type=Path)


def add_clinical(parser: argparse.ArgumentParser) -> None:
    """DICOM series choice, DICOM registration objects, user masks."""
    parser.add_argument("--fixed-series", help="Series Instance UID to use when the fixed folder holds several")
    parser.add_argument("--moving-series", help="Series Instance UID to use when the moving folder holds several")
    parser.add_argument("--output-dicom-reg", type=Path, help="DICOM Spatial Registration of the result (Deformable "
                        "Spatial Registration for a deformable one); needs DICOM inputs; maps moving patient "
                        "coordinates to fixed ones")
    parser.add_argument("--export-failed", action="store_true", help="write --output-dicom-reg even when the "
                        "quality verdict is failed (the object then says so)")
    parser.add_argument("--initial-transform", type=Path, help="start pose: a DICOM REG (.dcm) or a linear ITK "
                        "transform file (fixed->moving); replaces the automatic search")
    parser.add_argument("--fixed-mask", type=Path, help="region of FIXED where the metric counts (labelmap, "
                        ".seg.nrrd or RTSTRUCT)")
    parser.add_argument("--moving-mask", type=Path, help="region of MOVING where the metric counts")
    parser.add_argument("--mask-mode", choices=MASK_MODES, default="intersect",
                        help="user masks intersect the automatic foreground masks (default) or replace them")


def check_clinical(args: argparse.Namespace) -> None:
    """InputError for clinical options that cannot work together with the inputs."""
    if args.output_dicom_reg and not (is_dicom_input(args.fixed) and is_dicom_input(args.moving)):
        raise InputError("--output-dicom-reg needs DICOM series as --fixed and --moving")
    if args.initial_transform and (args.fixed_landmarks or args.moving_landmarks):
        raise InputError("give either --initial-transform or landmarks as the start pose, not both")


def elastix_backend(args: argparse.Namespace) -> ElastixBackend:
    """The backend the options ask for, after checking --threads."""
    if args.threads is not None and args.threads < 1:
        raise InputError("--threads must be at least 1")
    return choose_backend(args.backend, args.elastix_executable)


def option_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def planned_writes(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(option, path) of every file the run will write, each file inside an output folder included."""
    writes = [(option_name(name), Path(getattr(args, name))) for name in FILE_OUTPUTS
              if getattr(args, name, None) is not None]
    stages = [stage.strip() for stage in str(getattr(args, "stages", "rigid")).split(",") if stage.strip()]
    if getattr(args, "output_elastix_transform", None) is not None and "deformable" in stages:
        path = Path(args.output_elastix_transform)
        writes.append(("--output-elastix-transform", path.with_name(f"{path.stem}.0.txt")))
    folders = {"output_masks": ["fixed_mask.nrrd", "moving_mask.nrrd"],
               "output_stage_transforms": [f"{stage}.h5" for stage in stages],
               "report_folder": report_file_names()}
    for name, files in folders.items():
        folder = getattr(args, name, None)
        if folder is not None:
            writes += [(f"{option_name(name)} ({file})", Path(folder) / file) for file in files]
    return writes


def check_outputs(args: argparse.Namespace, extra_writes: list[tuple[str, Path]] = ()) -> None:
    """InputError naming the option when an output of `args` cannot be written: each a supported file type in a
    writable folder on a device with free space, none a folder or a device; then the whole plan of files
    (with `extra_writes`) against the inputs and each other."""
    for name, suffixes in FILE_OUTPUTS.items():
        if getattr(args, name, None) is not None:
            check_output_file(getattr(args, name), option_name(name), suffixes)
    for name in FOLDER_OUTPUTS:
        if getattr(args, name, None) is not None:
            check_output_folder(getattr(args, name), option_name(name))
    inputs = [(option_name(name), Path(getattr(args, name))) for name in INPUTS
              if getattr(args, name, None) is not None]
    inputs += [("--preset", Path(path)) for path in getattr(args, "preset", [])]
    check_output_plan(inputs, planned_writes(args) + list(extra_writes))
