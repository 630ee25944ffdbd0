"""`ctmr-register`: register one CT/MR pair from files, or run the demo on the bundled pair.

    ctmr-register --fixed FIXED --moving MOVING --output-transform OUT.(h5|tfm) [--output-volume OUT.nrrd]
                  [--stages rigid|rigid,affine|rigid,affine,deformable] [--backend auto|elastix|itk-elastix]
                  [--preset FILE ...] [--fixed-landmarks P --moving-landmarks Q]
                  [--fixed-targets P --moving-targets Q] [--fixed-segmentation S --moving-segmentation R]
                  [--report-folder DIR] [--no-qa] [--json] [--threads N]
                  [--fixed-series UID --moving-series UID] [--output-dicom-reg REG.dcm] [--initial-transform F]
                  [--fixed-mask M] [--moving-mask N] [--mask-mode intersect|replace]
    ctmr-register --demo [--output-dir DIR]

FIXED and MOVING may be folders of DICOM files (or one file of a series).

OUT maps FIXED physical points (LPS) to MOVING physical points: the resampling transform of elastix and
SimpleITK (with a deformable stage, a composite: linear part, then B-spline). Loaded in Slicer and applied
to MOVING, it aligns MOVING to FIXED.

A quality assessment follows every registration (verdict ok / check / failed, see `ctmr-qa`). Exit status:
0 registered (verdict ok or check), 1 registration failed, verdict failed (outputs still written) or the
transform could not be written, 2 unusable input or output path (found before any work), 3 moving image
looks mirrored, 4 registered and the transform written but another output could not be (a warning says
which), 130/143 stopped by SIGINT/SIGTERM. Outputs are written atomically: a file at an output path is
whole; a failed or interrupted write leaves nothing there.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core import resources
from ..core.errors import CTMRError, InputError, OutputError
from ..core.geometry import matrix_from_sitk, transform_points
from ..core.imaging import mask_points
from ..core.output_files import write_atomically, write_folder_atomically, write_text_atomically
from ..dicom.inputs import read_initial_matrix
from ..dicom.registration_objects import write_registration_object
from ..elastix.transforms import write_elastix_transform
from ..mrml import node_io as mrml_io
from ..mrml.dicom_nodes import load_input_volume
from ..mrml.logic import RegistrationLogic
from ..mrml.nodes import add_volume_from_sitk, sitk_from_volume
from ..mrml.qa_inputs import load_qa_files, load_segmentation_file
from ..mrml.scene import create_headless_context
from ..mrml.scene_registration import SceneRegistrationResult
from ..qa.overlay import write_overlay_png
from ..qa.report import REPORT_NAME
from ..qa.verdict import bound_text
from ..registration.pipeline import BIAS_CORRECTIONS, INITIALIZATIONS
from . import arguments, command

EXIT_FAILED, EXIT_INPUT, EXIT_MIRRORED, EXIT_OUTPUT = 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctmr-register", description="Automatic CT-MR registration (either modality may be fixed)."
    )
    arguments.add_pair(parser, required=False)
    parser.add_argument("--output-transform", type=Path, help="ITK transform file, fixed->moving LPS (.h5, .tfm)")
    parser.add_argument("--output-volume", type=Path, help="moving volume resampled on the fixed grid")
    parser.add_argument("--output-inverse-transform", type=Path,
                        help="moving->fixed transform file (deformable: a grid transform on the moving 2 mm grid)")
    parser.add_argument("--output-elastix-transform", type=Path,
                        help="the result as elastix TransformParameters file(s) for transformix (FIXED's grid)")
    parser.add_argument("--grid-transform", action="store_true",
                        help="store a deformable result as a displacement field instead of a B-spline")
    parser.add_argument("--overlay", type=Path, help="PNG overlay before/after (magenta fixed, green moving)")
    parser.add_argument("--initialization", choices=INITIALIZATIONS, default="search",
                        help="start pose: global search (default), geometric centres, or the headers as they are")
    arguments.add_renamed(parser, "--init", "--initialization", choices=INITIALIZATIONS)
    parser.add_argument("--use-masks", action=argparse.BooleanOptionalAction, default=True,
                        help="restrict elastix to the foreground masks (default: yes)")
    arguments.add_renamed(parser, "--no-masks", "--no-use-masks", flag_value=False, dest="use_masks")
    parser.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True,
                        help="register only the region both objects share at the start pose (default: yes)")
    parser.add_argument("--crop-roi", type=Path, help="markups ROI (.mrk.json) in FIXED's frame: register within it "
                        "instead of the automatic common region")
    parser.add_argument("--registered-region", type=Path, help="the region registered, as a markups ROI "
                        "(.mrk.json) to edit and pass back with --crop-roi")
    arguments.add_renamed(parser, "--output-crop-roi", "--registered-region", type=Path)
    parser.add_argument("--accept-mirror", action="store_true",
                        help="register even when the moving image looks mirrored (the result then reflects)")
    parser.add_argument("--stages", default="rigid", help="elastix stages in order: rigid, rigid,affine or "
                        "rigid,affine,deformable (default: rigid)")
    parser.add_argument("--force-stages", action="store_true",
                        help="keep the affine/deformable results even when the stage guard finds that they align "
                        "edges worse than the stage before")
    parser.add_argument("--fine-rigid", action="store_true",
                        help="run the rigid stage on the 1 mm grid the affine and deformable stages use: closer on "
                        "anatomy that deformed between the scans, several times slower")
    parser.add_argument("--output-stage-transforms", type=Path,
                        help="folder for each elastix stage's own fixed->moving result (rigid.h5, affine.h5, "
                        "deformable.h5), also one the stage guard discarded")
    arguments.add_elastix(parser)
    parser.add_argument("--preset", type=Path, action="append", default=[],
                        help="elastix parameter file replacing the bundled one of the stage its Transform names "
                        "(Euler/Similarity: rigid, Affine: affine, BSpline: deformable); repeat for several")
    parser.add_argument("--bias-correction", choices=BIAS_CORRECTIONS, default="auto",
                        help="N4 bias-field correction of the image(s) registered: auto = MR images only")
    arguments.add_modalities(parser)
    parser.add_argument("--output-masks", type=Path,
                        help="folder for the foreground masks used (fixed_mask.nrrd, moving_mask.nrrd)")
    parser.add_argument("--fixed-landmarks", type=Path, help="landmarks in FIXED (.mrk.json, .fcsv): with "
                        "--moving-landmarks, their rigid fit replaces the automatic start pose")
    parser.add_argument("--moving-landmarks", type=Path, help="the same landmarks in MOVING (paired by label, "
                        "else by position)")
    arguments.add_ground_truth(parser)
    arguments.add_outputs(parser)
    arguments.add_clinical(parser)
    parser.add_argument("--qa", action=argparse.BooleanOptionalAction, default=True,
                        help="assess the result: verdict, reasons and metrics (default: yes)")
    parser.add_argument("--demo", action="store_true", help="register the bundled porcine CT/MR pair")
    parser.add_argument("--output-dir", type=Path, default=Path("ctmr-demo-output"), help="demo output folder")
    command.add_debug(parser)
    return parser


class _ProgressPrinter:
    """Prints progress to stderr when the stage changes or every 5 %, not at every elastix iteration."""

    def __init__(self):
        self.last = (-1.0, "")

    def __call__(self, fraction: float, message: str) -> None:
        if message != self.last[1] or fraction - self.last[0] >= 0.05:
            self.last = (fraction, message)
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)


def _check_arguments(args, parser) -> None:
    if args.demo:
        return
    missing = [name for name in ("fixed", "moving", "output_transform") if getattr(args, name) is None]
    if missing:
        parser.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing) + " (or use --demo)")
    if args.report_folder and not args.qa:
        raise InputError("--report-folder needs the quality assessment: drop --no-qa")
    arguments.check_clinical(args)


def register_files(args) -> tuple[SceneRegistrationResult, dict, list[str]]:
    """Load, register, write every requested output, the transform first; the result, the files written and
    warnings for the outputs that could not be written (the transform's failure is an OutputError)."""
    backend = arguments.elastix_backend(args)
    started = time.perf_counter()
    context = create_headless_context()
    fixed_node, fixed_series = load_input_volume(context, args.fixed, args.fixed_series, "fixed")
    moving_node, moving_series = load_input_volume(context, args.moving, args.moving_series, "moving")
    logic = RegistrationLogic(context)
    landmarks = {f"{role}_landmarks": mrml_io.load_markups(context, getattr(args, f"{role}_landmarks"))
                 for role in ("fixed", "moving") if getattr(args, f"{role}_landmarks") is not None}
    ground_truth = load_qa_files(context, args.fixed_targets, args.moving_targets, args.fixed_segmentation,
                                 args.moving_segmentation, volumes=(fixed_node, moving_node))
    crop_roi = mrml_io.load_markups(context, args.crop_roi) if args.crop_roi else None
    extra = {f"{role}_mask": load_segmentation_file(context, path, node) for role, path, node in
             (("fixed", args.fixed_mask, fixed_node), ("moving", args.moving_mask, moving_node)) if path is not None}
    if args.initial_transform:
        extra["initial_matrix"] = read_initial_matrix(args.initial_transform, moving_series)
    resampled_node = None
    if args.output_volume:
        resampled_node = context.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{moving_node.GetName()} on fixed")
    options = dict(
        initialization=args.initialization, use_masks=args.use_masks, crop=args.crop,
        accept_mirror=args.accept_mirror, stages=args.stages, presets=args.preset,
        backend=backend, threads=args.threads, bias_correction=args.bias_correction,
        fixed_modality=args.fixed_modality, moving_modality=args.moving_modality, mask_mode=args.mask_mode,
        force_stages=args.force_stages,
        fine_rigid=args.fine_rigid,
    )
    reading = time.perf_counter() - started
    result = logic.register(
        fixed_node, moving_node, progress=_ProgressPrinter(), apply_to_moving=False,
        add_mask_nodes=bool(args.output_masks), output_volume=resampled_node, grid_transform=args.grid_transform,
        qa=args.qa, crop_roi=crop_roi, add_registered_region=bool(args.registered_region),
        **options, **landmarks, **ground_truth, **extra,
    )
    writing_started = time.perf_counter()
    outputs: dict[str, str] = {}
    warnings: list[str] = []

    def attempt(kind: str, write) -> None:
        try:
            outputs[kind] = str(write())
        except OutputError as error:
            warnings.append(f"{kind} not written: {error}")

    @functools.cache
    def image(node) -> sitk.Image:
        """A volume as SimpleITK, converted once and only for the outputs that need it."""
        return sitk_from_volume(node)

    if result.status == "ok":
        outputs["transform"] = str(mrml_io.save_node(context, result.transform_node, args.output_transform))
    for role, node in result.mask_nodes.items():
        path = args.output_masks / f"{role}_mask.nrrd"
        attempt(f"{role}_mask", lambda node=node, path=path: mrml_io.save_node(context, node, path))
    if result.status != "ok":
        _profile(result, reading, time.perf_counter() - writing_started)
        return result, outputs, warnings
    if args.output_stage_transforms:
        attempt("stage_transforms", lambda: write_folder_atomically(args.output_stage_transforms, lambda folder: [
            sitk.WriteTransform(transform, str(folder / f"{stage}.h5"))
            for stage, transform in result.stage_transforms.items()]))
    if args.output_inverse_transform:
        reference = add_volume_from_sitk(context, result.moving_mask, "inverse grid") if result.deformable else None
        inverse = logic.inverse_transform_node(result.transform_node, reference)
        attempt("inverse_transform", lambda: mrml_io.save_node(context, inverse, args.output_inverse_transform))
    if args.output_dicom_reg and result.verdict == "failed" and not args.export_failed:
        warnings.append("dicom_reg not written: the quality verdict is failed (--export-failed writes it anyway, "
                        "marked as failed)")
    elif args.output_dicom_reg:
        attempt("dicom_reg", lambda: write_atomically(args.output_dicom_reg, lambda path: write_registration_object(
            path, result.transform, fixed_series, moving_series, image(fixed_node), result.verdict, True)))
    if args.output_elastix_transform:
        attempt("elastix_transform", lambda: write_elastix_transform(
            result.transform, image(fixed_node), args.output_elastix_transform)[-1])
    if result.registered_region_node is not None:
        attempt("registered_region", lambda: mrml_io.save_node(context, result.registered_region_node,
                                                               args.registered_region))
    if resampled_node is not None:
        attempt("volume", lambda: mrml_io.save_node(context, resampled_node, args.output_volume))
    if args.overlay:
        rows = {"before": result.initial_transform if args.initialization == "none" else sitk.Transform(),
                "after": result.transform}
        attempt("overlay", lambda: write_atomically(
            args.overlay, lambda path: write_overlay_png(path, image(fixed_node), image(moving_node), rows),
            lambda path: sitk.ReadImage(str(path))))
    if args.report_folder:
        parameters = {name: value.name if name == "backend" else value for name, value in options.items()
                      if value is not None and value != {}}
        attempt("report", lambda: write_folder_atomically(args.report_folder, lambda folder: logic.write_report(
            folder, result, image(fixed_node), image(moving_node), fixed_node, moving_node, parameters)) / REPORT_NAME)
    _profile(result, reading, time.perf_counter() - writing_started)
    return result, outputs, warnings


def _profile(result: SceneRegistrationResult, reading: float, writing: float) -> None:
    """One profile of the run in result.stage_seconds: reading the inputs, the registration's steps, the quality
    check's steps (qa_*), writing the outputs."""
    checks = {f"qa_{step}": seconds for step, seconds in (result.qa.stage_seconds.items() if result.qa else ())}
    result.stage_seconds = {"reading": reading, **result.stage_seconds, **checks, "writing": writing}


def _demo_arguments(args) -> None:
    args.fixed, args.moving = resources.sample_ct_path(), resources.sample_mr_path()
    args.output_transform = args.output_dir / "transform_fixedCT_to_movingMR.h5"
    args.output_volume = args.output_dir / "mr_resampled_on_ct.nrrd"
    args.overlay = args.output_dir / "overlay.png"
    args.report_folder = args.output_dir / "report"


def reference_agreement_mm(result: SceneRegistrationResult) -> dict:
    """Distance between the result and the bundled reference rigid transform over the CT object."""
    from ..core.masks import ct_body_mask

    ct = sitk.ReadImage(str(resources.sample_ct_path()))
    points = mask_points(ct_body_mask(ct), count=4000)
    reference = matrix_from_sitk(sitk.ReadTransform(str(resources.sample_reference_transform_path())))
    distances = np.linalg.norm(transform_points(result.matrix, points) - transform_points(reference, points), axis=1)
    return {"median": round(float(np.median(distances)), 2), "p95": round(float(np.percentile(distances, 95)), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return command.run_command("ctmr-register", args, lambda: _run(args, parser),
                               json_error=lambda message, status: {"status": status, "error": message})


def _run(args, parser) -> int:
    try:
        _check_arguments(args, parser)
        if args.demo:
            _demo_arguments(args)
        arguments.check_outputs(args, [("--output-dir (result.json)", args.output_dir / "result.json")]
                                if args.demo else [])
        result, outputs, warnings = register_files(args)
    except CTMRError as error:
        message = (str(error).splitlines() or [type(error).__name__])[0]
        if args.json:
            print(json.dumps({"status": "error", "error": message}))
        print(f"ctmr-register: error: {message}", file=sys.stderr)
        return EXIT_INPUT if isinstance(error, InputError) else EXIT_FAILED
    report = result.as_dict() | {"outputs": outputs}
    if args.demo and result.status == "ok":
        report["metrics"]["reference_agreement_mm"] = reference_agreement_mm(result)
        try:
            write_text_atomically(args.output_dir / "result.json", json.dumps(report, indent=2))
        except OutputError as error:
            warnings.append(f"result not written: {error}")
    report["warnings"] = report["warnings"] + warnings
    for warning in warnings:
        print(f"ctmr-register: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    else:
        _print_summary(report)
    if result.status == "ok":
        return EXIT_FAILED if result.verdict == "failed" else EXIT_OUTPUT if warnings else 0
    return EXIT_MIRRORED if result.status == "mirrored" else EXIT_FAILED


def _print_summary(report: dict) -> None:
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"status: {report['status']}  ({report['fixed_modality']} fixed, {report['moving_modality']} moving)")
    if report.get("qa"):
        print(f"verdict: {report['verdict']}{bound_text(report['error_bound_mm'])}")
        for reason in report["qa"]["reasons"]:
            print(f"  - {reason}")
    stages = "  ".join(f"{name} {seconds:.1f} s" for name, seconds in report["stage_seconds"].items())
    print(f"time: {report['seconds']:.1f} s  {stages}")
    if "reference_agreement_mm" in report["metrics"]:
        agreement = report["metrics"]["reference_agreement_mm"]
        print(f"agreement with the reference rigid transform over the CT object: "
              f"median {agreement['median']} mm, p95 {agreement['p95']} mm")
    for kind, path in report["outputs"].items():
        print(f"wrote {kind}: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
