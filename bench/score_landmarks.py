"""Score registration results on the porcine air-pocket pairs (Testing/Data/porcine_air_pockets.json).

Each transform file maps fixed CT points to moving MR points (LPS, as ctmr-register writes them). Prints the
mean / median / max distance (mm) over all pairs, by depth below the CT object's surface, by the tissue around
the pocket in the CT (fat or muscle; with each result's mean error vector there), and over the central MR slab
(CENTRAL_MR_Z_MM). Beside them, the floors the pairs set themselves (porcine_landmarks.landmark_floors): each MR
point predicted from the other pairs by a rigid, an affine and a thin-plate fit (leave one out), fitted over all
pairs, and the same fitted over the central slab's pairs alone.

The central slab is a calibration, not ground truth of its own (docs/validation.md compares it with held-out
pairs).

    CTMR_SHARED_DATA=../shared/data/mridir-porcine python bench/score_landmarks.py RESULT.h5 [RESULT2.tfm ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMRRegistration"))
sys.path.insert(0, str(ROOT / "CTMRRegistration" / "Testing" / "Python"))

from ground_truth import mapped  # noqa: E402
from porcine_landmarks import CENTRAL_MR_Z_MM, coarse_mask, landmark_floors  # noqa: E402

PAIRS = ROOT / "CTMRRegistration" / "Testing" / "Data" / "porcine_air_pockets.json"
DEPTH_BANDS_MM = ((0, 5), (5, 10), (10, 20), (20, np.inf))
TISSUE_SHELL_MM = (3.0, 6.0)  # the shell around a CT pocket whose median HU says what tissue holds it
TISSUES_HU = {"in fat": (-np.inf, -30.0), "in muscle": (20.0, np.inf)}  # fat about -100 HU, muscle about 50


def surface_depth(ct: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Distance (mm) of each point below the CT object's surface (library foreground mask, 2x coarser grid)."""
    inside = sitk.SignedMaurerDistanceMap(coarse_mask(ct, "CT"), insideIsPositive=True, useImageSpacing=True,
                                          squaredDistance=False)
    return np.array([inside.EvaluateAtPhysicalPoint(p.tolist(), sitk.sitkLinear) for p in points])


def surrounding_hu(ct: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Median HU of the tissue (above -300 HU) in a TISSUE_SHELL_MM shell around each CT point."""
    voxels = sitk.GetArrayViewFromImage(ct)
    spacing = np.array(ct.GetSpacing())
    reach = np.ceil(TISSUE_SHELL_MM[1] / spacing).astype(int)
    offsets = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), -1).reshape(-1, 3)
    distance = np.linalg.norm(offsets * spacing, axis=1)
    offsets = offsets[(distance >= TISSUE_SHELL_MM[0]) & (distance <= TISSUE_SHELL_MM[1])]
    medians = []
    for point in points:
        index = np.clip(np.array(ct.TransformPhysicalPointToIndex(point.tolist())) + offsets, 0,
                        np.array(ct.GetSize()) - 1)
        values = voxels[index[:, 2], index[:, 1], index[:, 0]]
        medians.append(np.median(values[values > -300]))
    return np.array(medians)


def _cell(errors: np.ndarray) -> str:
    return f"{errors.mean():.2f} / {np.median(errors):.2f} / {errors.max():.2f}" if len(errors) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("transforms", nargs="+", type=Path, help="ITK transform files, fixed CT -> moving MR")
    arguments = parser.parse_args()
    data = Path(os.environ.get("CTMR_SHARED_DATA", ROOT.parent / "shared" / "data" / "mridir-porcine"))
    pairs = json.loads(PAIRS.read_text())
    ct_points, mr_points = np.array(pairs["ct_points_lps"]), np.array(pairs["mr_points_lps"])
    ct = sitk.ReadImage(str(data / "ct_fullres.nii.gz"))
    depth, tissue = surface_depth(ct, ct_points), surrounding_hu(ct, ct_points)
    groups = {"all": np.ones(len(ct_points), bool),
              "central MR slab": (mr_points[:, 2] >= CENTRAL_MR_Z_MM[0]) & (mr_points[:, 2] <= CENTRAL_MR_Z_MM[1])}
    groups |= {f"depth {low}-{high} mm": (depth >= low) & (depth < high) for low, high in DEPTH_BANDS_MM}
    groups |= {name: (tissue > low) & (tissue < high) for name, (low, high) in TISSUES_HU.items()}
    offsets = {path.name: mapped(sitk.ReadTransform(str(path)), ct_points) - mr_points for path in arguments.transforms}
    central = groups["central MR slab"]
    rows = {f"floor: {kind}, leave one out": errors for kind, errors in landmark_floors(ct_points, mr_points).items()}
    central_floors = landmark_floors(ct_points[central], mr_points[central])
    rows |= {name: np.linalg.norm(offset, axis=1) for name, offset in offsets.items()}
    print("mean / median / max (mm); pairs: " + ", ".join(f"{name} {mask.sum()}" for name, mask in groups.items()))
    width = max(map(len, rows))
    print(" " * width + "".join(f" | {name:^20}" for name in groups))
    for name, errors in rows.items():
        print(f"{name:{width}}" + "".join(f" | {_cell(errors[mask]):^20}" for mask in groups.values()))
    print("floors fitted on the central slab's pairs alone: " + ", ".join(
        f"{kind} {_cell(errors)}" for kind, errors in central_floors.items()))
    print("\nmean error vector, mapped CT point - MR point (x, y, z; LPS mm), by the tissue around the pocket")
    for name, offset in offsets.items():
        means = {tissue_name: offset[groups[tissue_name]].mean(axis=0).round(2) for tissue_name in TISSUES_HU}
        print(f"{name:{width}}" + "".join(f" | {tissue_name} {mean}" for tissue_name, mean in means.items()))


if __name__ == "__main__":
    main()
