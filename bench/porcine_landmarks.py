"""Anatomical landmark pairs of the porcine phantom, located independently in its full-resolution CT and MR.

Method: air pockets are dark blobs inside the object in both scans (CT below a HU threshold, T2 MR below a
fraction of the object's median intensity), 3 mm or more inside the object's mask. Each blob's centroid is a
landmark. The CT blobs are mapped into the MR only to pair them, first with the reference rigid transform, then twice
with the affine least-squares fit of the pairs found so far (a pairing aid, not the ground truth): a pair is
kept when the two blobs are each other's nearest neighbours within PAIR_MM, the second-nearest MR blob is
clearly farther (ratio test) and the blob volumes agree within a factor VOLUME_RATIO. The localisation error
of a blob is how far its centroid moves between two thresholds (blobs that move more than STABLE_MM are
dropped); the pair's is the root sum of squares of its two blobs'.

    CTMR_SHARED_DATA=../shared/data/mridir-porcine python bench/porcine_landmarks.py
writes CTMRRegistration/Testing/Data/porcine_air_pockets.json (CT and MR points in LPS mm).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMRRegistration"))

from CTMRRegistrationLib.core.geometry import matrix_from_sitk, transform_points  # noqa: E402
from CTMRRegistrationLib.core.masks import foreground_mask  # noqa: E402

OUTPUT = ROOT / "CTMRRegistration" / "Testing" / "Data" / "porcine_air_pockets.json"
CT_THRESHOLDS_HU = (-400.0, -500.0)  # main, and the second for the localisation error
MR_FRACTIONS = (0.25, 0.2)  # of the object's median intensity
VOLUME_MM3 = (3.0, 400.0)
INSIDE_MM = 3.0
PAIR_MM = 8.0
STABLE_MM = 3.0  # a blob whose centroid moves more than this between the thresholds is not a landmark
RATIO = 1.5  # the second-nearest partner must be this much farther than the nearest
VOLUME_RATIO = 3.0
PAIRING_ROUNDS = 3  # pairing under the reference, then under the affine fitted to the pairs found so far


def _mask_at_full_resolution(image: sitk.Image, modality: str) -> sitk.Image:
    """The library's foreground mask, computed on a 2x coarser grid (faster) and brought back."""
    spacing = [2 * s for s in image.GetSpacing()]
    size = [max(1, n // 2) for n in image.GetSize()]
    small = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                          image.GetDirection(), float(sitk.GetArrayViewFromImage(image).min()), sitk.sitkFloat32)
    return sitk.Resample(foreground_mask(small, modality), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def dark_blobs(image: sitk.Image, mask: sitk.Image, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (LPS mm) and volumes (mm^3) of the connected regions below `threshold` inside `mask`."""
    inside = sitk.BinaryErode(mask, [max(1, int(round(INSIDE_MM / s))) for s in image.GetSpacing()])
    labels = sitk.ConnectedComponent(sitk.And(image < threshold, inside))
    shapes = sitk.LabelShapeStatisticsImageFilter()
    shapes.Execute(labels)
    found = [(shapes.GetCentroid(k), shapes.GetPhysicalSize(k)) for k in shapes.GetLabels()]
    found = [(c, v) for c, v in found if VOLUME_MM3[0] <= v <= VOLUME_MM3[1]]
    return np.array([c for c, _ in found]).reshape(-1, 3), np.array([v for _, v in found])


def _localisation(points: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest centroid found at the other threshold (inf if over STABLE_MM)."""
    distances = cKDTree(other).query(points)[0] if len(other) else np.full(len(points), np.inf)
    return np.where(distances <= STABLE_MM, distances, np.inf)


def _affine_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares 4x4 affine matrix mapping `source` points onto `target` points."""
    solution = np.linalg.lstsq(np.c_[source, np.ones(len(source))], target, rcond=None)[0]
    return np.vstack([solution.T, [0.0, 0.0, 0.0, 1.0]])


def pair_blobs(ct_points, ct_volumes, mr_points, mr_volumes, ct_to_mr: np.ndarray) -> list[tuple[int, int]]:
    """(CT index, MR index) of mutual nearest neighbours under `ct_to_mr` that pass the ratio and volume tests."""
    mapped = transform_points(ct_to_mr, ct_points)
    mr_tree, ct_tree = cKDTree(mr_points), cKDTree(mapped)
    distances, nearest = mr_tree.query(mapped, k=2)
    pairs = []
    for i, ((d1, d2), (j, _)) in enumerate(zip(distances, nearest)):
        if d1 > PAIR_MM or d2 < RATIO * d1 or ct_tree.query(mr_points[j])[1] != i:
            continue
        if max(ct_volumes[i], mr_volumes[j]) > VOLUME_RATIO * min(ct_volumes[i], mr_volumes[j]):
            continue
        pairs.append((i, j))
    return pairs


def main() -> None:
    data = Path(os.environ.get("CTMR_SHARED_DATA", ROOT.parent / "shared" / "data" / "mridir-porcine"))
    ct = sitk.ReadImage(str(data / "ct_fullres.nii.gz"))
    mr = sitk.Cast(sitk.ReadImage(str(data / "mr_t2_fullres.nii.gz")), sitk.sitkFloat32)
    reference = matrix_from_sitk(sitk.ReadTransform(str(data / "reference_rigid_fixedCT_movingMR.tfm")))
    ct_mask, mr_mask = _mask_at_full_resolution(ct, "CT"), foreground_mask(mr, "MR")
    median = float(np.median(sitk.GetArrayViewFromImage(mr)[sitk.GetArrayViewFromImage(mr_mask) > 0]))
    ct_found = [dark_blobs(ct, ct_mask, t) for t in CT_THRESHOLDS_HU]
    mr_found = [dark_blobs(mr, mr_mask, f * median) for f in MR_FRACTIONS]
    (ct_points, ct_volumes), (mr_points, mr_volumes) = ct_found[0], mr_found[0]
    ct_error = _localisation(ct_points, ct_found[1][0])
    mr_error = _localisation(mr_points, mr_found[1][0])
    stable_ct, stable_mr = np.isfinite(ct_error), np.isfinite(mr_error)
    ct_points, ct_volumes, ct_error = ct_points[stable_ct], ct_volumes[stable_ct], ct_error[stable_ct]
    mr_points, mr_volumes, mr_error = mr_points[stable_mr], mr_volumes[stable_mr], mr_error[stable_mr]
    guide = reference
    for _ in range(PAIRING_ROUNDS):
        pairs = pair_blobs(ct_points, ct_volumes, mr_points, mr_volumes, guide)
        guide = _affine_fit(ct_points[[i for i, _ in pairs]], mr_points[[j for _, j in pairs]])
    ct_index, mr_index = (np.array(p, dtype=int) for p in zip(*pairs))
    error = np.sqrt(ct_error[ct_index] ** 2 + mr_error[mr_index] ** 2)
    rigid = np.linalg.norm(transform_points(reference, ct_points[ct_index]) - mr_points[mr_index], axis=1)
    record = {
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "ct_points_lps": ct_points[ct_index].round(3).tolist(),
        "mr_points_lps": mr_points[mr_index].round(3).tolist(),
        "ct_volumes_mm3": ct_volumes[ct_index].round(1).tolist(),
        "mr_volumes_mm3": mr_volumes[mr_index].round(1).tolist(),
        "localisation_error_mm": error.round(3).tolist(),
        "blobs_found": {"ct": len(ct_points), "mr": len(mr_points)},
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(record, indent=1))
    finite = error
    print(f"blobs: CT {len(ct_points)}, MR {len(mr_points)}; pairs {len(pairs)}")
    print(f"localisation error (threshold change): median {np.median(finite):.2f} mm, "
          f"p90 {np.percentile(finite, 90):.2f} mm")
    print(f"distance under the reference rigid transform: mean {rigid.mean():.2f}, median {np.median(rigid):.2f}, "
          f"max {rigid.max():.2f} mm")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
