"""Anatomical landmark pairs of the porcine phantom, located independently in its full-resolution CT and MR.

Method: air pockets are dark blobs inside the object in both scans: CT below a HU threshold; T2 MR, after the
library's N4 bias-field correction, below a fraction of the object's median intensity; INSIDE_MM or more inside
the object's mask. Each blob's centroid is a landmark. CT pockets down to MIN_CT_MM3 are kept: pairs then lie
about 12 mm apart, close enough that a local deformation shows in several of them (with 8 mm3 and 3 mm inside,
40 pairs 20 mm apart, neighbouring residuals were unrelated). The CT blobs are mapped into the MR only to pair
them: first with the reference rigid transform, then with the affine and then the quadratic least-squares fit of the
pairs found so far, searched within shrinking radii (a pairing aid, not the ground truth). A pair is kept when
the two blobs are each other's nearest neighbours and the second-nearest MR blob is clearly farther (ratio
test). A pair whose leave-one-out residual under the quadratic fit of the other pairs exceeds OUTLIER_FACTOR
times the median is dropped (a likely mismatch). The localisation error of a blob is how far its centroid
moves between two thresholds (blobs that move more than STABLE_MM are dropped); the pair's is the root sum of
squares of its two blobs'. The leave-one-out residual bounds localisation, pairing and motion that a smooth
(quadratic) map cannot follow together.

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
from CTMRRegistrationLib.registration.bias_field import correct_bias_field  # noqa: E402

OUTPUT = ROOT / "CTMRRegistration" / "Testing" / "Data" / "porcine_air_pockets.json"
CT_THRESHOLDS_HU = (-400.0, -500.0)  # main, and the second for the localisation error
MR_FRACTIONS = (0.35, 0.3)  # of the bias-corrected object's median intensity
MIN_CT_MM3, MIN_MR_MM3, MAX_MM3 = 3.0, 3.0, 400.0
INSIDE_MM = 1.0
STABLE_MM = 2.0  # a blob whose centroid moves more than this between the thresholds is not a landmark
RATIO = 1.5  # the second-nearest partner must be this much farther than the nearest
PAIRING = ((8.0, 1), (6.0, 1), (6.0, 1), (5.0, 2), (5.0, 2), (5.0, 2))  # (radius mm, guide degree) per round
OUTLIER_FACTOR = 3.0


def coarse_mask(image: sitk.Image, modality: str) -> sitk.Image:
    """The library's foreground mask of `image`, computed on a 2x coarser grid (faster)."""
    spacing = [2 * s for s in image.GetSpacing()]
    size = [max(1, n // 2) for n in image.GetSize()]
    small = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                          image.GetDirection(), float(sitk.GetArrayViewFromImage(image).min()), sitk.sitkFloat32)
    return foreground_mask(small, modality)


def _mask_at_full_resolution(image: sitk.Image, modality: str) -> sitk.Image:
    """coarse_mask brought back onto `image`'s grid."""
    return sitk.Resample(coarse_mask(image, modality), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def dark_blobs(image: sitk.Image, mask: sitk.Image, threshold: float,
               min_volume: float) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (LPS mm) and volumes (mm^3) of the connected regions below `threshold` inside `mask`."""
    inside = sitk.BinaryErode(mask, [max(1, int(round(INSIDE_MM / s))) for s in image.GetSpacing()])
    labels = sitk.ConnectedComponent(sitk.And(image < threshold, inside))
    shapes = sitk.LabelShapeStatisticsImageFilter()
    shapes.Execute(labels)
    found = [(shapes.GetCentroid(k), shapes.GetPhysicalSize(k)) for k in shapes.GetLabels()]
    found = [(c, v) for c, v in found if min_volume <= v <= MAX_MM3]
    return np.array([c for c, _ in found]).reshape(-1, 3), np.array([v for _, v in found])


def stable_blobs(image: sitk.Image, mask: sitk.Image, thresholds, min_volume: float):
    """Blobs at thresholds[0] whose centroid moves at most STABLE_MM at thresholds[1]: points, volumes and
    that movement (the localisation error)."""
    points, volumes = dark_blobs(image, mask, thresholds[0], min_volume)
    other = dark_blobs(image, mask, thresholds[1], 0.0)[0]
    moved = cKDTree(other).query(points)[0] if len(other) else np.full(len(points), np.inf)
    stable = moved <= STABLE_MM
    return points[stable], volumes[stable], moved[stable]


def _polynomial_terms(points: np.ndarray, degree: int) -> np.ndarray:
    x, y, z = (points / 100.0).T
    terms = [np.ones(len(points)), x, y, z]
    if degree == 2:
        terms += [x * x, y * y, z * z, x * y, x * z, y * z]
    return np.stack(terms, axis=1)


def polynomial_fit(source: np.ndarray, target: np.ndarray, degree: int):
    """The least-squares polynomial map (degree 1: affine, 2: quadratic) of `source` onto `target` points."""
    weights = np.linalg.lstsq(_polynomial_terms(source, degree), target, rcond=None)[0]
    return lambda points: _polynomial_terms(points, degree) @ weights


def leave_one_out(source: np.ndarray, target: np.ndarray, degree: int = 2) -> np.ndarray:
    """Distance from each target to its source mapped by the fit of all other pairs."""
    keep = ~np.eye(len(source), dtype=bool)
    return np.array([np.linalg.norm(polynomial_fit(source[k], target[k], degree)(source[[i]])[0] - target[i])
                     for i, k in enumerate(keep)])


def neighbour_coherence(source: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    """Mean cosine between each pair's quadratic-fit residual and its nearest pair's, the same for random
    partners (mean, sd over 200 draws), and the median nearest-pair distance (mm). A deformation that a smooth
    registration could follow at that distance leaves neighbouring residuals alike (cosine well above random);
    residuals of independent pocket motion and localisation do not."""
    residual = polynomial_fit(source, target, 2)(source) - target
    unit = residual / np.linalg.norm(residual, axis=1, keepdims=True)
    distances, nearest = cKDTree(source).query(source, k=2)
    rng = np.random.default_rng(0)
    draws = [np.mean(np.sum(unit * unit[np.roll(np.arange(len(unit)), 1 + rng.integers(len(unit) - 1))], axis=1))
             for _ in range(200)]
    return float(np.mean(np.sum(unit * unit[nearest[:, 1]], axis=1))), float(np.mean(draws)), \
        float(np.std(draws)), float(np.median(distances[:, 1]))


def pair_blobs(ct_points: np.ndarray, mr_points: np.ndarray, ct_to_mr, radius: float) -> np.ndarray:
    """(CT index, MR index) rows of mutual nearest neighbours within `radius` under `ct_to_mr` that pass the
    ratio test."""
    mapped = ct_to_mr(ct_points)
    distances, nearest = cKDTree(mr_points).query(mapped, k=2)
    back = cKDTree(mapped).query(mr_points[nearest[:, 0]])[1]
    good = (distances[:, 0] <= radius) & (distances[:, 1] >= RATIO * distances[:, 0])
    good &= back == np.arange(len(ct_points))
    return np.c_[np.flatnonzero(good), nearest[good, 0]]


def main() -> None:
    data = Path(os.environ.get("CTMR_SHARED_DATA", ROOT.parent / "shared" / "data" / "mridir-porcine"))
    ct = sitk.ReadImage(str(data / "ct_fullres.nii.gz"))
    mr = sitk.Cast(sitk.ReadImage(str(data / "mr_t2_fullres.nii.gz")), sitk.sitkFloat32)
    reference = matrix_from_sitk(sitk.ReadTransform(str(data / "reference_rigid_fixedCT_movingMR.tfm")))
    mr_mask = foreground_mask(mr, "MR")
    mr = correct_bias_field(mr, mr_mask)
    median = float(np.median(sitk.GetArrayViewFromImage(mr)[sitk.GetArrayViewFromImage(mr_mask) > 0]))
    ct_points, ct_volumes, ct_error = stable_blobs(ct, _mask_at_full_resolution(ct, "CT"), CT_THRESHOLDS_HU,
                                                   MIN_CT_MM3)
    mr_points, mr_volumes, mr_error = stable_blobs(mr, mr_mask, [f * median for f in MR_FRACTIONS], MIN_MR_MM3)
    guide = lambda points: transform_points(reference, points)  # noqa: E731
    for radius, degree in PAIRING:
        pairs = pair_blobs(ct_points, mr_points, guide, radius)
        guide = polynomial_fit(ct_points[pairs[:, 0]], mr_points[pairs[:, 1]], degree)
    residual = leave_one_out(ct_points[pairs[:, 0]], mr_points[pairs[:, 1]])
    dropped = int(np.sum(residual > OUTLIER_FACTOR * np.median(residual)))
    pairs = pairs[residual <= OUTLIER_FACTOR * np.median(residual)]
    ct_index, mr_index = pairs.T
    residual = leave_one_out(ct_points[ct_index], mr_points[mr_index])
    error = np.sqrt(ct_error[ct_index] ** 2 + mr_error[mr_index] ** 2)
    rigid = np.linalg.norm(transform_points(reference, ct_points[ct_index]) - mr_points[mr_index], axis=1)
    record = {
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "ct_points_lps": ct_points[ct_index].round(3).tolist(),
        "mr_points_lps": mr_points[mr_index].round(3).tolist(),
        "ct_volumes_mm3": ct_volumes[ct_index].round(1).tolist(),
        "mr_volumes_mm3": mr_volumes[mr_index].round(1).tolist(),
        "localisation_error_mm": error.round(3).tolist(),
        "quadratic_leave_one_out_mm": residual.round(3).tolist(),
        "blobs_found": {"ct": len(ct_points), "mr": len(mr_points)},
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(record, indent=1))
    print(f"stable blobs: CT {len(ct_points)}, MR {len(mr_points)}; pairs {len(pairs)} ({dropped} dropped as outliers)")
    print(f"localisation error (threshold change): median {np.median(error):.2f} mm, "
          f"p90 {np.percentile(error, 90):.2f} mm")
    print(f"leave-one-out residual of the quadratic fit: mean {residual.mean():.2f}, median {np.median(residual):.2f},"
          f" max {residual.max():.2f} mm")
    cosine, random, spread, spacing = neighbour_coherence(ct_points[ct_index], mr_points[mr_index])
    print(f"quadratic-fit residual, cosine with the nearest pair's ({spacing:.0f} mm apart, median): {cosine:.2f}; "
          f"with a random pair's: {random:.2f} +- {spread:.2f}")
    print(f"distance under the reference rigid transform: mean {rigid.mean():.2f}, median {np.median(rigid):.2f}, "
          f"max {rigid.max():.2f} mm")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
