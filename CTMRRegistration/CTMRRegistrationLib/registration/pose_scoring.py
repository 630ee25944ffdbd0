"""Score a fixed->moving pose by cues that together tell a near-symmetric object's true pose.

Mutual information over the masks alone picks wrong poses of near-symmetric objects, so three cues
are combined, each computed on fixed sample points that land inside the moving image's grid:
mask overlap (Dice), normalised mutual information of intensities over the union of the masks, and
edge alignment (squared dot product of normalised gradient fields, which holds across CT and MR
because both show the same boundaries whatever their contrast).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .coarse_view import INTENSITY_BINS, SEED, CoarseView

CUES = ("dice", "nmi", "edges")
SAMPLE_POINTS = 3000
MIN_COVERAGE = 0.2


BATCH = 64


def _entropies(probabilities: np.ndarray, axes) -> np.ndarray:
    logs = np.log(np.where(probabilities > 0, probabilities, 1.0))
    return -(probabilities * logs).sum(axis=axes)


def normalised_mutual_information(joint_counts: np.ndarray) -> np.ndarray:
    """(H(F) + H(M)) / H(F, M) of (n, bins, bins) joint histograms: 1 when independent, 2 when identical."""
    joint = joint_counts / np.maximum(joint_counts.sum(axis=(1, 2), keepdims=True), 1)
    joint_entropy = _entropies(joint, (1, 2))
    marginals = _entropies(joint.sum(axis=2), 1) + _entropies(joint.sum(axis=1), 1)
    return np.where(joint_entropy > 0, marginals / np.where(joint_entropy > 0, joint_entropy, 1.0), 1.0)


class PoseScorer:
    """Cues of fixed->moving poses (4x4 LPS) on points spread over the fixed object and its rim."""

    def __init__(self, fixed: CoarseView, moving: CoarseView):
        inside = fixed.channels[..., 0] > 0
        voxels = np.argwhere(ndimage.binary_dilation(inside, iterations=2))
        if len(voxels) > SAMPLE_POINTS:
            voxels = voxels[np.random.default_rng(SEED).choice(len(voxels), SAMPLE_POINTS, replace=False)]
        self.points = voxels[:, ::-1] @ fixed.physical_from_index[:3, :3].T + fixed.physical_from_index[:3, 3]
        values = fixed.channels[voxels[:, 0], voxels[:, 1], voxels[:, 2]]
        self.fixed_inside = values[:, 0] > 0
        self.fixed_bins = values[:, 1].astype(np.int64)
        self.fixed_edges = values[:, 2:]
        self.fixed = fixed
        self.moving = moving

    def cues(self, matrices: np.ndarray) -> np.ndarray:
        """(n, 3) cues (dice, nmi, edges) of (n, 4, 4) poses, higher is better; NaN rows where too
        little of the fixed samples lands inside the moving grid."""
        return np.concatenate([self._cues(matrices[i:i + BATCH]) for i in range(0, len(matrices), BATCH)])

    def _cues(self, matrices: np.ndarray) -> np.ndarray:
        values, inside_grid = self.moving.sample(self.points, matrices)
        values = values.reshape(len(matrices), len(self.points), -1)
        inside_grid = inside_grid.reshape(len(matrices), -1)
        fixed_inside = self.fixed_inside & inside_grid
        moving_inside = (values[..., 0] > 0) & inside_grid
        counted = np.count_nonzero  # counts booleans several times faster than sum
        dice = 2.0 * counted(fixed_inside & moving_inside, axis=1) / np.maximum(
            counted(fixed_inside, axis=1) + counted(moving_inside, axis=1), 1)
        union = fixed_inside | moving_inside
        joint_index = self.fixed_bins * INTENSITY_BINS + values[..., 1].astype(np.int64)
        offsets = np.arange(len(matrices))[:, None] * INTENSITY_BINS**2
        joint = np.bincount((joint_index + offsets)[union], minlength=len(matrices) * INTENSITY_BINS**2)
        nmi = normalised_mutual_information(joint.reshape(-1, INTENSITY_BINS, INTENSITY_BINS).astype(float))
        moving_edges = values[..., 2:] @ matrices[:, :3, :3]
        alignment = (self.fixed_edges * moving_edges).sum(axis=2) ** 2
        inside_count = counted(inside_grid, axis=1)
        edges = (alignment * inside_grid).sum(1) / np.maximum(inside_count, 1)
        cues = np.stack([dice, nmi, edges], axis=1)
        cues[inside_count / inside_grid.shape[1] < MIN_COVERAGE] = np.nan
        return cues

    def poses(self, rotations: np.ndarray, iterations: int = 2) -> np.ndarray:
        """(n, 4, 4) poses with `rotations` and translations that map the fixed mask centroid onto
        the moving one.

        The centroids are recomputed over the parts of each mask that land inside the other image's
        grid, so a moving image covering only part of the fixed object is still centred on that part.
        """
        fixed_points, moving_points = self.fixed.mask_points, self.moving.mask_points
        fixed_centroids = np.repeat(self.fixed.centroid[None], len(rotations), axis=0)
        moving_centroids = np.repeat(self.moving.centroid[None], len(rotations), axis=0)
        forward = np.repeat(np.eye(4)[None], len(rotations), axis=0)  # fixed->moving poses, and their inverses
        backward = forward.copy()
        forward[:, :3, :3], backward[:, :3, :3] = rotations, rotations.transpose(0, 2, 1)
        for _ in range(iterations):
            translations = moving_centroids - (rotations @ fixed_centroids[..., None])[..., 0]
            forward[:, :3, 3] = translations
            backward[:, :3, 3] = -(backward[:, :3, :3] @ translations[..., None])[..., 0]
            fixed_seen = self.moving.contains(fixed_points, forward).reshape(len(rotations), -1)
            moving_seen = self.fixed.contains(moving_points, backward).reshape(len(rotations), -1)
            usable = (fixed_seen.sum(1) >= 10) & (moving_seen.sum(1) >= 10)
            fixed_centroids[usable] = (fixed_seen @ fixed_points)[usable] / fixed_seen.sum(1, keepdims=True)[usable]
            moving_centroids[usable] = (moving_seen @ moving_points)[usable] / moving_seen.sum(1, keepdims=True)[usable]
        matrices = np.repeat(np.eye(4)[None], len(rotations), axis=0)
        matrices[:, :3, :3] = rotations
        matrices[:, :3, 3] = moving_centroids - (rotations @ fixed_centroids[..., None])[..., 0]
        return matrices
