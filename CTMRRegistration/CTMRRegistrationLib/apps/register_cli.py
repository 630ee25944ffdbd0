"""`ctmr-register`: register one CT/MR pair from files, or run the demo on the bundled pair.

    ctmr-register --fixed FIXED --moving MOVING --output-transform OUT.(h5|tfm) [--output-volume OUT.nrrd]
                  [--stages rigid|rigid,affine|rigid,affine,deformable] [--backend auto|elastix|itk-elastix]
                  [--preset FILE ...] [--fixed-landmarks P --moving-landmarks Q]
                  [--fixed-targets P --moving-targets Q] [--fixed-seg S --moving-seg R]
                  [--report DIR] [--no-qa] [--json] [--threads N]
    ctmr-register --demo [--output-dir DIR]

OUT maps FIXED physical points (LPS) to MOVING physical points: the resampling transform of elastix and
SimpleITK (with a deformable stage, a composite: linear part, then B-spline). Loaded in Slicer and applied
to MOVING, it aligns MOVING to FIXED.

A quality assessment follows every registration (verdict ok / check / failed, see `ctmr-qa`). Exit status:
0 registered (verdict ok or check), 1 registration failed or verdict failed (outputs still written),
2 unusable input, 3 moving image looks mirrored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core import resources
from ..core.errors import CTMRError, InputError
from ..core.geometry import matrix_from_sitk, transform_points
from ..elastix.backends import BACKENDS
from ..elastix.export import write_elastix_transform
from ..mrml import node_io as mrml_io
from ..mrml.logic import RegistrationLogic
from ..mrml.nodes import add_volume_from_sitk, sitk_from_volume
from ..mrml.qa_inputs import load_qa_files
from ..mrml.scene import create_headless_context
from ..qa.overlay import write_overlay_png
from ..qa.report import REPORT_NAME
from ..registration.pipeline import INITIALIZATIONS, RegistrationResult, preset_stage

TRANSFORM_SUFFIXES = (".h5", ".tfm", ".txt")
EXIT_FAILED, EXIT_INPUT, EXIT_MIRRORED = 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctmr-register", description="Automatic CT-MR registration (either modality may be fixed)."
    )
    parser.add_argument("--fixed", type=Path, help="fixed volume (.nrrd, .nii, .nii.gz, .mha)")
    parser.add_argument("--moving", type=Path, help="moving volume")
    parser.add_argument("--output-transform", type=Path, help="ITK transform file, fixed->moving LPS (.h5, .tfm)")
    parser.add_argument("--output-volume", type=Path, help="moving volume resampled on the fixed grid")
    parser.add_argument("--output-inverse-transform", type=Path,
                        help="moving->fixed transform file (deformable: a grid transform on the moving 2 mm grid)")
    parser.add_argument("--output-elastix-transform", type=Path,
                        help="the result as elastix TransformParameters file(s) for transformix (FIXED's grid)")
    parser.add_argument("--grid-transform", action="store_true",
                        help="store a deformable result as a displacement field instead of a B-spline")
    parser.add_argument("--overlay", type=Path, help="PNG overlay before/after (magenta fixed, green moving)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the result to stdout")
    parser.add_argument("--threads", type=int, default=None, help="threads for elastix and ITK (default: all)")
    parser.add_argument("--init", choices=INITIALIZATIONS, default="search",
                        help="start pose: global search (default), geometric centres, or the headers as they are")
    parser.add_argument("--no-masks", action="store_true", help="do not restrict elastix to foreground masks")
    parser.add_argument("--accept-mirror", action="store_true",
                        help="register even when the moving image looks mirrored (the result then reflects)")
    parser.add_argument("--stages", default="rigid", help="elastix stages in order: rigid, rigid,affine or "
                        "rigid,affine,deformable (default: rigid)")
    parser.add_argument("--force-stages", action="store_true",
                        help="keep the affine/deformable results even when the stage guard finds that they align "
                        "edges worse than the stage before")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="elastix executable, the itk-elastix wheel, or auto: an executable when one is found")
    parser.add_argument("--preset", type=Path, action="append", default=[],
                        help="elastix parameter file replacing the bundled one of the stage its Transform names "
                        "(Euler/Similarity: rigid, Affine: affine, BSpline: deformable); repeat for several")
    parser.add_argument("--bias-correction", choices=("auto", "on", "off"), default="auto",
                        help="N4 bias-field correction of the image(s) registered: auto = MR images only")
    parser.add_argument("--fixed-modality", choices=("CT", "MR"), help="override the detected modality")
    parser.add_argument("--moving-modality", choices=("CT", "MR"), help="override the detected modality")
    parser.add_argument("--output-masks", type=Path,
                        help="folder for the foreground masks used (fixed_mask.nrrd, moving_mask.nrrd)")
    parser.add_argument("--elastix", type=Path, help="elastix executable or its folder (default: $CTMR_ELASTIX, "
                        "PATH, else the itk-elastix wheel)")
    parser.add_argument("--fixed-landmarks", type=Path, help="landmarks in FIXED (.mrk.json, .fcsv): with "
                        "--moving-landmarks, their rigid fit replaces the automatic start pose")
    parser.add_argument("--moving-landmarks", type=Path, help="the same landmarks in MOVING (paired by label, "
                        "else by position)")
    parser.add_argument("--fixed-targets", type=Path, help="independent target points in FIXED, for the TRE")
    parser.add_argument("--moving-targets", type=Path, help="the same targets in MOVING")
    parser.add_argument("--fixed-seg", type=Path, help="segmentation of FIXED (.seg.nrrd or labelmap), for Dice "
                        "and surface distances")
    parser.add_argument("--moving-seg", type=Path, help="segmentation of MOVING")
    parser.add_argument("--report", type=Path, help="folder for the HTML quality report and its pictures")
    parser.add_argument("--no-qa", action="store_true", help="skip the quality assessment (no verdict)")
    parser.add_argument("--demo", action="store_true", help="register the bundled porcine CT/MR pair")
    parser.add_argument("--output-dir", type=Path, default=Path("ctmr-demo-output"), help="demo output folder")
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
    if not args.output_transform.name.lower().endswith(TRANSFORM_SUFFIXES):
        raise InputError(f"--output-transform must end in {', '.join(TRANSFORM_SUFFIXES)}")
    for option in ("output_inverse_transform",):
        path = getattr(args, option)
        if path is not None and not path.name.lower().endswith(TRANSFORM_SUFFIXES):
            raise InputError(f"--{option.replace('_', '-')} must end in {', '.join(TRANSFORM_SUFFIXES)}")
    if args.threads is not None and args.threads < 1:
        raise InputError("--threads must be at least 1")
    if args.report and args.no_qa:
        raise InputError("--report needs the quality assessment: drop --no-qa")


def _presets(paths: list[Path]) -> dict[str, Path]:
    """--preset files keyed by the stage their Transform names."""
    presets: dict[str, Path] = {}
    for path in paths:
        stage = preset_stage(path)
        if stage in presets:
            raise InputError(f"two presets for the {stage} stage: {presets[stage].name} and {path.name}")
        presets[stage] = path
    return presets


def register_files(args) -> tuple[RegistrationResult, dict]:
    """Load, register, write every requested output; returns the result and the files written."""
    context = create_headless_context()
    fixed_node = mrml_io.load_volume(context, args.fixed)
    moving_node = mrml_io.load_volume(context, args.moving)
    logic = RegistrationLogic(context)
    landmarks = {f"{role}_landmarks": mrml_io.load_markups(context, getattr(args, f"{role}_landmarks"))
                 for role in ("fixed", "moving") if getattr(args, f"{role}_landmarks") is not None}
    ground_truth = load_qa_files(context, args.fixed_targets, args.moving_targets, args.fixed_seg, args.moving_seg)
    resampled_node = None
    if args.output_volume:
        resampled_node = context.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{moving_node.GetName()} on fixed")
    result = logic.register(
        fixed_node, moving_node, progress=_ProgressPrinter(), apply_to_moving=False,
        add_mask_nodes=bool(args.output_masks), output_volume_node=resampled_node, grid_transform=args.grid_transform,
        initialization=args.init, use_masks=not args.no_masks, accept_mirror=args.accept_mirror,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()), presets=_presets(args.preset),
        backend=args.backend, elastix_executable=args.elastix, threads=args.threads, force_stages=args.force_stages,
        bias_correction={"auto": None, "on": True, "off": False}[args.bias_correction],
        fixed_modality=args.fixed_modality, moving_modality=args.moving_modality,
        qa=not args.no_qa, report_directory=args.report, **landmarks, **ground_truth,
    )
    outputs = {}
    for role, node in result.mask_nodes.items():
        outputs[f"{role}_mask"] = str(mrml_io.save_node(context, node, args.output_masks / f"{role}_mask.nrrd"))
    if result.status != "ok":
        return result, outputs
    outputs["transform"] = str(mrml_io.save_node(context, result.transform_node, args.output_transform))
    if args.output_inverse_transform:
        reference = add_volume_from_sitk(context, result.moving_mask, "inverse grid") if result.deformable else None
        inverse = logic.inverse_transform_node(result.transform_node, reference)
        outputs["inverse_transform"] = str(mrml_io.save_node(context, inverse, args.output_inverse_transform))
    if args.output_elastix_transform:
        written = write_elastix_transform(result.transform, sitk_from_volume(fixed_node), args.output_elastix_transform)
        outputs["elastix_transform"] = str(written[-1])
    if resampled_node is not None:
        outputs["volume"] = str(mrml_io.save_node(context, resampled_node, args.output_volume))
    if args.report:
        outputs["report"] = str(args.report / REPORT_NAME)
    if args.overlay:
        rows = {"before": result.initial_transform if args.init == "none" else sitk.Transform(),
                "after": result.transform}
        images = sitk_from_volume(fixed_node), sitk_from_volume(moving_node)
        outputs["overlay"] = str(write_overlay_png(args.overlay, *images, rows))
    return result, outputs


def _demo_arguments(args) -> None:
    args.fixed, args.moving = resources.sample_ct_path(), resources.sample_mr_path()
    args.output_transform = args.output_dir / "transform_fixedCT_to_movingMR.h5"
    args.output_volume = args.output_dir / "mr_resampled_on_ct.nrrd"
    args.overlay = args.output_dir / "overlay.png"
    args.report = args.output_dir / "report"


def reference_agreement_mm(result: RegistrationResult) -> dict:
    """Distance between the result and the bundled reference rigid transform over the CT object."""
    from ..core.masks import ct_body_mask

    ct = sitk.ReadImage(str(resources.sample_ct_path()))
    mask = sitk.GetArrayFromImage(ct_body_mask(ct))
    voxels = np.argwhere(mask > 0)[::7, ::-1].astype(float)
    points = np.array([ct.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])
    reference = matrix_from_sitk(sitk.ReadTransform(str(resources.sample_reference_transform_path())))
    distances = np.linalg.norm(transform_points(result.matrix, points) - transform_points(reference, points), axis=1)
    return {"median": round(float(np.median(distances)), 2), "p95": round(float(np.percentile(distances, 95)), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_arguments(args, parser)
        if args.demo:
            _demo_arguments(args)
        result, outputs = register_files(args)
    except CTMRError as error:
        message = str(error).splitlines()[0] if isinstance(error, InputError) else str(error)
        if args.json:
            print(json.dumps({"status": "error", "error": message}))
        print(f"ctmr-register: error: {message}", file=sys.stderr)
        return EXIT_INPUT if isinstance(error, InputError) else EXIT_FAILED
    report = result.as_dict() | {"outputs": outputs}
    if args.demo and result.status == "ok":
        report["metrics"]["reference_agreement_mm"] = reference_agreement_mm(result)
        (args.output_dir / "result.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report))
    else:
        _print_summary(report)
    if result.status == "ok":
        return EXIT_FAILED if result.verdict == "failed" else 0
    return EXIT_MIRRORED if result.status == "mirrored" else EXIT_FAILED


def _print_summary(report: dict) -> None:
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"status: {report['status']}  ({report['fixed_modality']} fixed, {report['moving_modality']} moving)")
    if report.get("qa"):
        print(f"verdict: {report['verdict']}")
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
