"""Variants of the deformable stage on the full-resolution porcine pair, scored on the air-pocket pairs beside
their thin-plate floor.

Each variant runs the forced rigid -> affine -> deformable chain from the pose search, with deformable preset
entries replaced (`--set`) and/or the stage's samples drawn from a different region (`--region`): `mask` (the
pipeline's), `interior` (the fixed mask eroded by 5 mm) or `no-fat` (CT voxels of -200 to -20 HU left out).
Prints the mean TRE over all pairs and the central MR slab, the mean error vector (mapped CT point - MR point,
LPS mm; a registration that follows the pockets leaves none), the deformable stage's seconds and the Jacobian
range, and the mean z error by MR z band (where a drift along the slices comes from).

    CTMR_SHARED_DATA=../shared/data/mridir-porcine python bench/deformable_variants.py [--set KEY=VALUE ...]
        [--view-margin MM] [--region mask|interior|no-fat]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from accuracy_benchmark import LANDMARKS
from porcine_landmarks import CENTRAL_MR_Z_MM, landmark_floors

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.elastix.parameters import read_parameter_file, write_parameter_file
from CTMRRegistrationLib.registration import pipeline

INTERIOR_MM = 5.0
FAT_HU = (-200.0, -20.0)


def restrict_samples(region: str) -> None:
    """Draw the deformable stage's samples from `region` instead of the pipeline's own."""
    if region == "mask":
        return
    sampled = pipeline._StageRunner._sampled_region

    def restricted(runner, stage, inputs, initial):
        found = sampled(runner, stage, inputs, initial)
        if stage != "deformable" or found is None:
            return found
        if region == "interior":
            return sitk.BinaryErode(found, [int(round(INTERIOR_MM / s)) for s in found.GetSpacing()])
        fat = sitk.And(inputs.fixed >= FAT_HU[0], inputs.fixed <= FAT_HU[1])
        return sitk.And(found, sitk.Not(sitk.BinaryOpeningByReconstruction(fat, [1, 1, 1])))

    pipeline._StageRunner._sampled_region = restricted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE[,VALUE]")
    parser.add_argument("--view-margin", type=float, help="the deformable stage's view margin (mm)")
    parser.add_argument("--region", choices=("mask", "interior", "no-fat"), default="mask")
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    data = Path(os.environ.get("CTMR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" /
                               "mridir-porcine"))
    ct, mr = (sitk.ReadImage(str(data / name)) for name in ("ct_fullres.nii.gz", "mr_t2_fullres.nii.gz"))
    pairs = json.loads(LANDMARKS.read_text())
    ct_points, mr_points = np.array(pairs["ct_points_lps"]), np.array(pairs["mr_points_lps"])
    central = (mr_points[:, 2] >= CENTRAL_MR_Z_MM[0]) & (mr_points[:, 2] <= CENTRAL_MR_Z_MM[1])
    if arguments.view_margin is not None:
        pipeline.VIEW_MARGIN_MM["deformable"] = arguments.view_margin
    restrict_samples(arguments.region)
    preset = read_parameter_file(resources.parameter_file("Deformable"))
    preset |= {key: value.split(",") for key, value in (entry.split("=", 1) for entry in arguments.set)}
    with tempfile.TemporaryDirectory() as work:
        path = write_parameter_file(preset, Path(work) / "deformable.txt")
        began = time.perf_counter()
        result = register_images(ct, mr, RegistrationOptions(stages=pipeline.STAGES, force_stages=True,
                                                             presets=[path], threads=arguments.threads))
        seconds = time.perf_counter() - began
    errors = np.array([result.transform.TransformPoint(p.tolist()) for p in ct_points]) - mr_points
    distances = np.linalg.norm(errors, axis=1)
    floor = landmark_floors(ct_points[central], mr_points[central])["tps"]
    guard = result.metrics["stage_guard"]["deformable"]
    print(f"deformable: preset changes {arguments.set or 'none'}; view margin "
          f"{pipeline.VIEW_MARGIN_MM['deformable']} mm; samples from {arguments.region}")
    print(f"mean TRE all {distances.mean():.2f} mm, central slab {distances[central].mean():.2f} mm (thin-plate floor "
          f"{floor.mean():.2f}); mean error vector all {errors.mean(axis=0).round(2)}, central "
          f"{errors[central].mean(axis=0).round(2)}")
    print(f"deformable stage {result.stage_seconds['deformable']:.0f} s of {seconds:.0f} s; Jacobian "
          f"{guard['jacobian_min']:.2f}-{guard['jacobian_max']:.2f}")
    edges = np.percentile(mr_points[:, 2], np.linspace(0, 100, 6))
    for low, high in zip(edges[:-1], edges[1:]):
        band = (mr_points[:, 2] >= low) & (mr_points[:, 2] <= high)
        print(f"  MR z {low:7.1f} to {high:6.1f} mm ({band.sum()} pairs): mean z error "
              f"{errors[band, 2].mean():+.2f} mm, TRE {distances[band].mean():.2f} mm")


if __name__ == "__main__":
    sys.exit(main())
