"""The rigid stage on the full-resolution porcine pair over elastix seeds and start poses, scored on the
air-pocket pairs (all and the central MR slab, see score_landmarks.py).

A single run tells little: elastix samples the images at random, so the seed alone moves the central
slab's mean TRE by about 0.1 mm. Each run starts from the reference rigid transform moved by up to 5 degrees and
8 mm (a fixed random set), with the bundled rigid preset, its RandomSeed and any `--set` entries replaced.

    CTMR_SHARED_DATA=../shared/data/mridir-porcine python bench/rigid_seeds.py [--seeds 1 2 3 4] [--starts 2]
        [--set NumberOfHistogramBins=64 ...] [--view-margin MM] [--fine-rigid]
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
from accuracy_benchmark import LANDMARKS, object_centre, start_pose
from porcine_landmarks import CENTRAL_MR_Z_MM

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, transform_points
from CTMRRegistrationLib.elastix.parameters import read_parameter_file, write_parameter_file
from CTMRRegistrationLib.registration import pipeline


def start_poses(reference: np.ndarray, centre: np.ndarray, count: int) -> list[np.ndarray]:
    """`count` starts: the reference rigid transform after a random turn (up to 5 degrees per axis) and shift
    (up to 8 mm per axis) about the MR object's centre."""
    rng = np.random.default_rng(5)
    return [reference @ start_pose(rng.uniform(-5, 5, 3), rng.uniform(-8, 8, 3), centre) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--starts", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE[,VALUE]",
                        help="rigid preset entries to replace, e.g. NumberOfSpatialSamples=2000,20000")
    parser.add_argument("--view-margin", type=float, help="sample the CT only this far (mm) inside the MR's view")
    parser.add_argument("--fine-rigid", action="store_true", help="the rigid stage on the 1 mm grid")
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    data = Path(os.environ.get("CTMR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" /
                               "mridir-porcine"))
    ct, mr = (sitk.ReadImage(str(data / name)) for name in ("ct_fullres.nii.gz", "mr_t2_fullres.nii.gz"))
    reference = matrix_from_sitk(sitk.ReadTransform(str(data / "reference_rigid_fixedCT_movingMR.tfm")))
    pairs = json.loads(LANDMARKS.read_text())
    ct_points, mr_points = np.array(pairs["ct_points_lps"]), np.array(pairs["mr_points_lps"])
    central = (mr_points[:, 2] >= CENTRAL_MR_Z_MM[0]) & (mr_points[:, 2] <= CENTRAL_MR_Z_MM[1])
    if arguments.view_margin is not None:
        pipeline.VIEW_MARGIN_MM["rigid"] = arguments.view_margin
    preset = read_parameter_file(resources.parameter_file("Rigid"))
    preset |= {key: value.split(",") for key, value in (entry.split("=", 1) for entry in arguments.set)}
    starts = start_poses(reference, object_centre(mr, "MR"), arguments.starts)
    print(f"rigid stage; preset changes {arguments.set or 'none'}; view margin {arguments.view_margin}; "
          f"{'1 mm' if arguments.fine_rigid else 'working'} grid")
    errors = []
    with tempfile.TemporaryDirectory() as work:
        for seed in arguments.seeds:
            path = write_parameter_file(preset | {"RandomSeed": [str(seed)]}, Path(work) / f"rigid_{seed}.txt")
            for number, start in enumerate(starts):
                began = time.perf_counter()
                result = register_images(ct, mr, RegistrationOptions(
                    initialization="none", initial_matrix=start, stages=("rigid",), presets=[path],
                    fine_rigid=arguments.fine_rigid, threads=arguments.threads))
                tre = np.linalg.norm(transform_points(result.matrix, ct_points) - mr_points, axis=1)
                errors.append((tre.mean(), tre[central].mean()))
                print(f"seed {seed} start {number}: mean TRE all {tre.mean():.2f} mm, central slab "
                      f"{tre[central].mean():.2f} mm ({time.perf_counter() - began:.0f} s)", flush=True)
    table = np.array(errors)
    print(f"over {len(table)} runs: all {table[:, 0].mean():.2f} ({table[:, 0].min():.2f}-{table[:, 0].max():.2f}) "
          f"mm, central slab {table[:, 1].mean():.2f} ({table[:, 1].min():.2f}-{table[:, 1].max():.2f}) mm")


if __name__ == "__main__":
    sys.exit(main())
