"""`ctmr-register` options for clinical formats: DICOM series choice, DICOM registration objects, user masks."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import InputError
from ..dicom.inputs import is_dicom_input
from ..registration.user_masks import MASK_MODES


def add_clinical(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fixed-series", help="Series Instance UID to use when the fixed folder holds several")
    parser.add_argument("--moving-series", help="Series Instance UID to use when the moving folder holds several")
    parser.add_argument("--output-dicom-reg", type=Path, help="DICOM Spatial Registration of the result (Deformable "
                        "Spatial Registration for a deformable one); needs DICOM inputs; maps moving patient "
                        "coordinates to fixed ones")
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
