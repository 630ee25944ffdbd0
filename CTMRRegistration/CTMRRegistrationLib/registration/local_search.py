"""Local pattern search of candidate poses on the coarse pose score, ahead of the costlier refinement.

The sweep's rotations lie about 15 degrees apart, and the translation of a pose between two partial views
of a limb is uncertain by tens of millimetres; a candidate that close to the truth can score below wrong
poses whose cues happen to sit near their own optimum, and Mattes MI refinement does not recover from that
far. Each candidate therefore climbs the combined score first: it moves to the best of its twelve
neighbours (a turn about each axis through the fixed object's centroid, a shift along each axis, both
ways) while one improves, and halves its steps when none does, down to 4 degrees (the refinement takes it
from there).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.spatial.transform import Rotation

ROTATION_STEP_DEGREES = 8.0
TRANSLATION_STEP_MM = 10.0
SMALLEST_ROTATION_STEP_DEGREES = 4.0
MAX_ROUNDS = 40


def _neighbours(poses: np.ndarray, steps: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(n, 12, 4, 4): each pose turned about each axis through `centre` (fixed space) and shifted along each
    axis (moving space), both ways, by its (rotation degrees, translation mm) steps."""
    signs = np.repeat(np.eye(3), 2, axis=0) * np.tile([-1.0, 1.0], 3)[:, None]  # (6, 3)
    turns = Rotation.from_rotvec((np.radians(steps[:, :1, None]) * signs).reshape(-1, 3)).as_matrix()
    turns = turns.reshape(len(poses), 6, 3, 3)
    turned = np.repeat(poses[:, None], 6, axis=1)
    turned[..., :3, :3] = poses[:, None, :3, :3] @ turns
    turned[..., :3, 3] = poses[:, None, :3, 3] + ((poses[:, None, :3, :3] - turned[..., :3, :3]) @ centre)
    shifted = np.repeat(poses[:, None], 6, axis=1)
    shifted[..., :3, 3] += steps[:, 1:, None] * signs
    return np.concatenate([turned, shifted], axis=1)


def climb(poses: np.ndarray, score: Callable[[np.ndarray], np.ndarray],
          centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each of the (n, 4, 4) fixed->moving `poses` after a pattern search of `score` (higher is better; it
    scores (k, 4, 4) poses at once), with its score. `centre`: the fixed point the turns go about."""
    poses = np.array(poses, dtype=float).reshape(-1, 4, 4)
    scores = score(poses)
    steps = np.tile([ROTATION_STEP_DEGREES, TRANSLATION_STEP_MM], (len(poses), 1))
    for _ in range(MAX_ROUNDS):
        active = np.flatnonzero((steps[:, 0] >= SMALLEST_ROTATION_STEP_DEGREES) & np.isfinite(scores))
        if not len(active):
            break
        candidates = _neighbours(poses[active], steps[active], centre)
        candidate_scores = score(candidates.reshape(-1, 4, 4)).reshape(len(active), -1)
        best = np.argmax(candidate_scores, axis=1)
        better = candidate_scores[np.arange(len(active)), best] > scores[active]
        moved = active[better]
        poses[moved] = candidates[better, best[better]]
        scores[moved] = candidate_scores[better, best[better]]
        steps[active[~better]] /= 2.0
    return poses, scores
