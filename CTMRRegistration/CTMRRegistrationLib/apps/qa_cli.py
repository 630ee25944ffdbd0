"""`ctmr-qa`: assess a given transform between two volumes, without registering them.

    ctmr-qa --fixed F --moving M --transform T [--backward-transform B]
            [--fixed-targets P --moving-targets Q] [--fixed-segmentation S --moving-segmentation R]
            [--report-folder DIR] [--json] [--threads N] [--restarts K] [--backward-refinement]

T maps FIXED physical points to MOVING ones (LPS), like `ctmr-register --output-transform`. Inverse
consistency is measured against --backward-transform (moving->fixed, e.g. `ctmr-register` run with FIXED
and MOVING exchanged), or with --backward-refinement against a short rigid registration of FIXED onto
MOVING started from the inverse of T (a noisier cue: elastix is less stable with the MR fixed). Targets
are markups files (.mrk.json, .fcsv) paired point by point; segmentations are .seg.nrrd files (segments
paired by name) or labelmap volumes (paired by value).

Exit status: 0 verdict ok, 1 verdict failed, 3 verdict check, 2 unusable input or output path (found before
any work), 4 assessed but the report could not be written (a warning says why), 130/143 stopped by
SIGINT/SIGTERM. The report's files are written atomically: each file in the folder is whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import SimpleITK as sitk

from ..core.errors import CTMRError, InputError, OutputError
from ..core.output_files import write_folder_atomically
from ..mrml.dicom_nodes import load_input_volume, tag_modality
from ..mrml.nodes import sitk_from_volume
from ..mrml.qa_inputs import load_qa_files, segmentation_pair, target_points
from ..mrml.scene import create_headless_context
from ..qa.assess import QAOptions, QAResult, assess
from ..qa.report import REPORT_NAME, write_qa_report
from ..qa.verdict import bound_text
from . import arguments, command

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_CHECK, EXIT_OUTPUT = 0, 1, 2, 3, 4
EXIT_CODES = {"ok": EXIT_OK, "failed": EXIT_FAILED, "check": EXIT_CHECK}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctmr-qa", description="Assess the quality of a CT-MR registration.")
    arguments.add_pair(parser, required=True)
    parser.add_argument("--transform", type=Path, required=True, help="ITK transform file, fixed->moving LPS")
    parser.add_argument("--backward-transform", type=Path, help="ITK transform file, moving->fixed LPS")
    arguments.add_ground_truth(parser)
    arguments.add_outputs(parser)
    arguments.add_elastix(parser)
    parser.add_argument("--restarts", type=int, default=QAOptions.restarts,
                        help=f"short registrations from perturbed starts (default {QAOptions.restarts}, 0 to skip)")
    parser.add_argument("--backward-refinement", action="store_true",
                        help="without --backward-transform, register FIXED onto MOVING to measure inverse consistency")
    arguments.add_modalities(parser)
    command.add_debug(parser)
    return parser


def read_transform(path: Path) -> sitk.Transform:
    """A 3-D ITK transform file (.h5, .tfm, .txt); InputError when missing, unreadable or not 3-D."""
    if not path.is_file():
        raise InputError(f"transform file not found: {path}")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as error:
        raise InputError(f"cannot read transform {path.name}: not an ITK transform file") from error
    if transform.GetDimension() != 3:
        raise InputError(f"{path.name} is a {transform.GetDimension()}-D transform: give a 3-D one (fixed->moving)")
    return transform


def assess_files(args) -> tuple[QAResult, dict, list[str]]:
    """Load the inputs, assess, write the report when asked; the result, the files written and a warning when
    the report could not be written."""
    if args.restarts < 0:
        raise InputError("--restarts must be 0 or more")
    arguments.check_outputs(args)
    backend = arguments.elastix_backend(args)
    context = create_headless_context()
    fixed_node, _ = load_input_volume(context, args.fixed, role="fixed")
    moving_node, _ = load_input_volume(context, args.moving, role="moving")
    fixed, moving = (tag_modality(sitk_from_volume(node), node) for node in (fixed_node, moving_node))
    transform = read_transform(args.transform)
    backward = read_transform(args.backward_transform) if args.backward_transform else None
    nodes = load_qa_files(context, args.fixed_targets, args.moving_targets, args.fixed_segmentation,
                          args.moving_segmentation,
                          volumes=(fixed_node, moving_node))
    ground_truth = target_points(nodes.get("fixed_targets"), nodes.get("moving_targets"))
    ground_truth |= segmentation_pair(context, nodes.get("fixed_segmentation"), nodes.get("moving_segmentation"))
    options = QAOptions(restarts=args.restarts, backward_refinement=args.backward_refinement,
                        threads=args.threads, fixed_modality=args.fixed_modality, moving_modality=args.moving_modality,
                        backend=backend)
    result = assess(fixed, moving, transform, backward, options=options, **ground_truth)
    outputs, warnings = {}, []
    if args.report_folder:
        names = ("fixed", "moving", "transform", "backward_transform", "fixed_targets", "moving_targets",
                 "fixed_segmentation", "moving_segmentation")
        inputs = {name: str(getattr(args, name)) for name in names if getattr(args, name) is not None}
        parameters = vars(options) | {"backend": backend.name}
        try:
            write_folder_atomically(args.report_folder, lambda folder: write_qa_report(
                folder, fixed, moving, transform, result, inputs=inputs, parameters=parameters))
            outputs["report"] = str(args.report_folder / REPORT_NAME)
        except OutputError as error:
            warnings.append(f"report not written: {error}")
    return result, outputs, warnings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return command.run_command("ctmr-qa", args, lambda: _run(args), json_error=lambda message, status: {
        "verdict": "error", "reasons": [message], "metrics": {}, "error": message})


def _run(args) -> int:
    try:
        result, outputs, warnings = assess_files(args)
    except CTMRError as error:
        message = (str(error).splitlines() or [type(error).__name__])[0]
        if args.json:
            print(json.dumps({"verdict": "error", "reasons": [message], "metrics": {}, "error": message}))
        print(f"ctmr-qa: error: {message}", file=sys.stderr)
        return EXIT_INPUT if isinstance(error, InputError) else EXIT_FAILED
    report = result.as_dict() | {"outputs": outputs, "warnings": warnings}
    for warning in warnings:
        print(f"ctmr-qa: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"verdict: {result.verdict}{bound_text(result.metrics.get('error_bound_mm'))}")
        for reason in result.reasons:
            print(f"  - {reason}")
        for name, value in result.metrics.items():
            if not isinstance(value, (dict, list)):
                print(f"{name}: {value}")
        for kind, path in outputs.items():
            print(f"wrote {kind}: {path}")
    return EXIT_OUTPUT if warnings and result.verdict != "failed" else EXIT_CODES[result.verdict]


if __name__ == "__main__":
    raise SystemExit(main())
