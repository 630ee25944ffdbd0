"""The command-line options `ctmr-register` and `ctmr-qa` share, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import InputError
from ..core.imaging import MODALITIES
from ..elastix.backends import BACKENDS, ElastixBackend, choose_backend


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
    parser.add_argument("--fixed-seg", type=Path, help="segmentation of FIXED (.seg.nrrd, labelmap, or RTSTRUCT "
                        "paired by ROI name), for Dice and surface distances")
    parser.add_argument("--moving-seg", type=Path, help="segmentation of MOVING")


def add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", type=Path, help="folder for the HTML quality report and its pictures")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the result to stdout")


def add_elastix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="threads for elastix and ITK (default: all)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="elastix executable, the itk-elastix wheel, or auto: an executable when one is found")
    parser.add_argument("--elastix", type=Path, help="elastix executable or its folder (default: $CTMR_ELASTIX, "
                        "PATH, else the itk-elastix wheel)")


def elastix_backend(args: argparse.Namespace) -> ElastixBackend:
    """The backend the options ask for, after checking --threads."""
    if args.threads is not None and args.threads < 1:
        raise InputError("--threads must be at least 1")
    return choose_backend(args.backend, args.elastix)
