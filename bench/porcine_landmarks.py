"""Anatomical landmark pairs of the porcine phantom, located independently in its full-resolution CT and MR.

Method: air pockets are dark blobs inside the object in both scans: CT below a HU threshold; T2 MR, after the
library's N4 bias-field correction, below a fraction of the object's median intensity; INSIDE_MM or more inside
the object's mask; MIN_CT_MM3 / MIN_MR_MM3 or larger. Each blob's landmark is its sub-voxel air centre: every
voxel within one slice spacing of the blob weighs its air fraction against the tissue around it (see
`air_centres`), so partial-volume voxels place the centre between voxels and slices. A blob whose thresholded
centroid moves more than STABLE_MM between two thresholds is dropped. The CT blobs are mapped into the MR only to
pair them: first with the reference rigid transform, then with the affine, quadratic and thin-plate fits of the
pairs found so far, searched within shrinking radii (a pairing aid, not the ground truth). A pair is kept when
the two blobs are each other's nearest neighbours and the second-nearest MR blob is clearly farther (ratio
test). A pair whose leave-one-out residual exceeds OUTLIER_FACTOR times the median, under the quadratic fit of
the other pairs and then under their thin-plate spline, is dropped (a mismatch, or a pocket that moved on its
own). The localisation error of a blob is how far its thresholded centroid moves between the two thresholds;
the pair's is the root sum of squares of its two blobs'.

The floors (`landmark_floors`): how far each MR point lies from its CT point mapped by a least-squares rigid,
affine and thin-plate fit of the pairs, each pair left out of its own fit: below them no registration of that
kind can be shown to be better on these pairs.

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
from scipy import ndimage
from scipy.interpolate import RBFInterpolator
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "CTMRRegistration"))

from CTMRRegistrationLib.core.geometry import matrix_from_sitk, transform_points  # noqa: E402
from CTMRRegistrationLib.core.masks import foreground_mask  # noqa: E402
from CTMRRegistrationLib.landmarks.fit_errors import leave_one_out_errors  # noqa: E402
from CTMRRegistrationLib.registration.bias_field import correct_bias_field  # noqa: E402

CENTRAL_MR_Z_MM = (-54.4, 70.7)  # MR slices 30-80 of 94: where both scans hold the object well
OUTPUT = ROOT / "CTMRRegistration" / "Testing" / "Data" / "porcine_air_pockets.json"
CT_THRESHOLDS_HU = (-400.0, -500.0)  # main, and the second for the localisation error
MR_FRACTIONS = (0.35, 0.3)  # of the bias-corrected object's median intensity
MIN_CT_MM3, MIN_MR_MM3, MAX_MM3 = 1.5, 1.5, 400.0
INSIDE_MM = 1.0
STABLE_MM = 2.0  # a blob whose centroid moves more than this between the thresholds is not a landmark
RATIO = 1.5  # the second-nearest partner must be this much farther than the nearest
PAIRING = ((8.0, "affine"), (6.0, "affine"), (6.0, "affine"), (5.0, "quadratic"), (5.0, "quadratic"),
           (5.0, "quadratic"), (4.0, "tps"), (4.0, "tps"))  # (radius mm, guide) per round
GUIDE_SMOOTHING = 100.0  # mm^2, of the thin-plate guide: it follows the pairs' trend, not each pair
FLOOR_KINDS = ("rigid", "affine", "tps")
OUTLIER_FACTOR = 3.0
SHELL_MM = (1.5, 3.0)  # around a pocket: the tissue its air fraction is measured against
CT_AIR_HU = -1000.0


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
               min_volume: float) -> tuple[np.ndarray, np.ndarray, sitk.Image, dict[int, tuple]]:
    """Centroids (LPS mm) and volumes (mm^3) of the connected regions below `threshold` inside `mask`, with
    their label image and the bounding box (index x, y, z, size x, y, z) of each label kept."""
    inside = sitk.BinaryErode(mask, [max(1, int(round(INSIDE_MM / s))) for s in image.GetSpacing()])
    labels = sitk.ConnectedComponent(sitk.And(image < threshold, inside))
    shapes = sitk.LabelShapeStatisticsImageFilter()
    shapes.Execute(labels)
    kept = [k for k in shapes.GetLabels() if min_volume <= shapes.GetPhysicalSize(k) <= MAX_MM3]
    points = np.array([shapes.GetCentroid(k) for k in kept]).reshape(-1, 3)
    return (points, np.array([shapes.GetPhysicalSize(k) for k in kept]), labels,
            {k: shapes.GetBoundingBox(k) for k in kept})


def air_centres(image: sitk.Image, labels: sitk.Image, boxes: dict[int, tuple], air: float | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sub-voxel centre (LPS mm) and air volume (mm^3) of each labelled pocket: every voxel within one slice
    spacing of it weighs its air fraction, (tissue - value) / (tissue - air) clipped to 0-1, where tissue is the
    median of a shell SHELL_MM around the pocket and air the given level (CT: -1000 HU) or the pocket's own 5th
    percentile. Partial-volume voxels then move the centre by what they hold, not by whether they pass a
    threshold (the MR's 2.5 mm slices leave a thresholded centroid a slice's fraction off in z)."""
    values, label_array = sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(labels)
    spacing = np.array(image.GetSpacing())[::-1]  # z, y, x
    margin = np.ceil((max(spacing) + SHELL_MM[1]) / spacing).astype(int)  # voxels around a box: reach + shell
    centres, volumes = [], []
    for k, (x, y, z, sx, sy, sz) in boxes.items():
        low = np.maximum(np.array([z, y, x]) - margin, 0)
        high = np.minimum(np.array([z + sz, y + sy, x + sx]) + margin, values.shape)
        block = tuple(slice(a, b) for a, b in zip(low, high))
        pocket, local = label_array[block] == k, values[block].astype(float)
        distance = ndimage.distance_transform_edt(~pocket, sampling=spacing)
        shell = (distance >= SHELL_MM[0]) & (distance <= SHELL_MM[1]) & (label_array[block] == 0)
        tissue = np.median(local[shell])
        air_level = air if air is not None else np.percentile(local[pocket], 5)
        weight = np.clip((tissue - local) / max(tissue - air_level, 1e-6), 0.0, 1.0)
        weight[(distance > max(spacing)) | ((label_array[block] != 0) & ~pocket)] = 0.0
        index = (np.argwhere(weight > 0) + low)[:, ::-1]  # x, y, z
        centre = (weight[weight > 0][:, None] * index).sum(axis=0) / weight.sum()
        centres.append(image.TransformContinuousIndexToPhysicalPoint(centre.tolist()))
        volumes.append(weight.sum() * np.prod(spacing))
    return np.array(centres).reshape(-1, 3), np.array(volumes)


def stable_blobs(image: sitk.Image, mask: sitk.Image, thresholds, min_volume: float, air: float | None):
    """Blobs at thresholds[0] whose centroid moves at most STABLE_MM at thresholds[1]: their sub-voxel centres
    (air_centres), air volumes and that movement (the localisation error of the thresholded centroid)."""
    points, _, labels, boxes = dark_blobs(image, mask, thresholds[0], min_volume)
    other = dark_blobs(image, mask, thresholds[1], 0.0)[0]
    moved = cKDTree(other).query(points)[0] if len(other) else np.full(len(points), np.inf)
    stable = moved <= STABLE_MM
    centres, volumes = air_centres(image, labels, {k: box for (k, box), keep in zip(boxes.items(), stable) if keep},
                                   air)
    return centres, volumes, moved[stable]


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


def guide_fit(source: np.ndarray, target: np.ndarray, guide: str):
    """The pairing guide of one round: an affine, quadratic or smoothed thin-plate map of `source` onto `target`."""
    if guide == "tps":
        return RBFInterpolator(source, target, kernel="thin_plate_spline", smoothing=GUIDE_SMOOTHING)
    return polynomial_fit(source, target, {"affine": 1, "quadratic": 2}[guide])


def leave_one_out(source: np.ndarray, target: np.ndarray, degree: int = 2) -> np.ndarray:
    """Distance from each target to its source mapped by the polynomial fit of all other pairs."""
    keep = ~np.eye(len(source), dtype=bool)
    return np.array([np.linalg.norm(polynomial_fit(source[k], target[k], degree)(source[[i]])[0] - target[i])
                     for i, k in enumerate(keep)])


def landmark_floors(ct_points: np.ndarray, mr_points: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair, the leave-one-out distance under the library's rigid, affine and thin-plate landmark fits."""
    return {kind: leave_one_out_errors(ct_points, mr_points, kind) for kind in FLOOR_KINDS}


def without_outliers(pairs: np.ndarray, ct_points: np.ndarray, mr_points: np.ndarray, residual) -> np.ndarray:
    """`pairs` less those whose `residual(ct, mr)` exceeds OUTLIER_FACTOR times its median."""
    errors = residual(ct_points[pairs[:, 0]], mr_points[pairs[:, 1]])
    return pairs[errors <= OUTLIER_FACTOR * np.median(errors)]


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
                                                   MIN_CT_MM3, CT_AIR_HU)
    mr_points, mr_volumes, mr_error = stable_blobs(mr, mr_mask, [f * median for f in MR_FRACTIONS], MIN_MR_MM3,
                                                   None)
    guide = lambda points: transform_points(reference, points)  # noqa: E731
    for radius, guide_kind in PAIRING:
        pairs = pair_blobs(ct_points, mr_points, guide, radius)
        guide = guide_fit(ct_points[pairs[:, 0]], mr_points[pairs[:, 1]], guide_kind)
    found = len(pairs)
    pairs = without_outliers(pairs, ct_points, mr_points, leave_one_out)
    pairs = without_outliers(pairs, ct_points, mr_points, lambda ct, mr: leave_one_out_errors(ct, mr, "tps"))
    dropped = found - len(pairs)
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
        "central_mr_z_mm": list(CENTRAL_MR_Z_MM),
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
    central = (mr_points[mr_index, 2] >= CENTRAL_MR_Z_MM[0]) & (mr_points[mr_index, 2] <= CENTRAL_MR_Z_MM[1])
    for name, keep in (("all pairs", np.ones(len(pairs), bool)), ("central MR slab", central)):
        floors = landmark_floors(ct_points[ct_index][keep], mr_points[mr_index][keep])
        print(f"floors, {name} ({keep.sum()} pairs, each left out of its own fit): "
              + ", ".join(f"{kind} {errors.mean():.2f} (median {np.median(errors):.2f})"
                          for kind, errors in floors.items()))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
