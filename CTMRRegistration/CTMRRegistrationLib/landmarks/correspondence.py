"""Do two landmark lists correspond point by point? Pairing by label, swapped pairs, and what swapping
the From and To lists does to the RMS error.

Why the RMS can differ between "CT in From" and "CT in To" (a user saw 5.7 mm one way, 53 mm the other):
a least-squares rigid fit is symmetric: the fit of To onto From is exactly the inverse of the fit of From
onto To, with the same RMS, and moving either list rigidly (a parent transform, another scanner frame)
leaves the RMS unchanged. So when the two directions disagree, the two runs did not compare the same
point pairs in the same frame:
- the error was measured by applying the transform to the wrong list (the To points mapped forward, or a
  list that had already been moved by the transform): the pose difference itself enters the error, tens
  of millimetres for CT and MR scanned in different positions (`wrong_list_rms` shows that number);
- a list was read in a different frame in one run only, e.g. it sat under the output transform (whose
  result then moves it: a feedback loop) or under a scaling or non-linear transform;
- with a similarity transform, the RMS is expressed in the To list's units, so swapping the lists divides
  it by the scale: a ratio of 9 means a scale of 9, i.e. lists in different units or a wrong voxel spacing;
- the lists were edited or re-ordered between the runs.
This library reads both lists in world coordinates without the output transform's own effect, pairs them
by label when the labels agree, and reports the RMS with its direction check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.geometry import distances
from .fit import check_landmarks, linear_fit

SWAP_GAIN = 0.5  # a swap is reported when exchanging two points at least halves the RMS error ...
SWAP_MIN_RMS_MM = 0.5  # ... and the RMS error without the swap is above this
SPREAD_RATIO = 0.15  # an RMS error above this fraction of the points' spread means they hardly correspond
SCALE_WARNING = 1.5  # a similarity scale beyond 1/1.5 .. 1.5 suggests different units or spacing


def order_by_labels(fixed_labels: list[str], moving_labels: list[str]) -> tuple[np.ndarray | None, str | None]:
    """Moving-list indices that follow the fixed list's labels, and a note for the user.

    Returns an order when both lists carry the same unique, non-empty labels in different orders; None
    (pair by position) otherwise, with a note when some but not all labels are shared."""
    fixed_labels, moving_labels = list(fixed_labels), list(moving_labels)
    shared = set(fixed_labels) & set(moving_labels) - {""}
    if not shared:
        return None, None
    unique = len(set(fixed_labels)) == len(fixed_labels) and len(set(moving_labels)) == len(moving_labels)
    if unique and set(fixed_labels) == set(moving_labels) and "" not in shared:
        if fixed_labels == moving_labels:
            return None, None
        order = np.array([moving_labels.index(label) for label in fixed_labels])
        return order, "the moving landmarks were paired with the fixed ones by label, not by position in the list"
    return None, (f"only {len(shared)} of {len(fixed_labels)} landmark labels appear in both lists (or labels "
                  "repeat): points are paired by their position in the lists")


def _check_kind(kind: str, count: int) -> str:
    """The linear model that tests correspondence for `kind` (a spline fits any pairing exactly)."""
    if kind == "tps" or (kind == "affine" and count < 6):
        return "similarity"
    return kind


def _rms(fixed: np.ndarray, moving: np.ndarray, kind: str) -> float:
    return float(np.sqrt(np.mean(distances(linear_fit(fixed, moving, kind), fixed, moving) ** 2)))


@dataclass
class SwapCheck:
    """Pairs whose exchange explains most of the error, and the error before and after (mm)."""

    swapped_pairs: list[tuple[int, int]] = field(default_factory=list)
    rms_before: float = 0.0
    rms_after: float = 0.0
    spread_ratio: float = 0.0  # RMS error / RMS distance of the fixed points from their centroid

    def warnings(self, labels: list[str] | None = None) -> list[str]:
        """Sentences for the user, naming points by label (or 1-based number)."""
        def name(index: int) -> str:
            return labels[index] if labels and labels[index] else f"#{index + 1}"

        found = []
        if self.swapped_pairs:
            pairs = ", ".join(f"{name(i)} and {name(j)}" for i, j in self.swapped_pairs)
            found.append(f"landmarks look swapped: {pairs} (exchanging them lowers the RMS error from "
                         f"{self.rms_before:.1f} to {self.rms_after:.1f} mm); check their order in the lists")
        elif self.spread_ratio > SPREAD_RATIO:
            found.append(f"the RMS error ({self.rms_before:.1f} mm) is {self.spread_ratio:.0%} of the landmarks' "
                         "spread: the lists do not seem to correspond point by point (order, missing points?)")
        return found


def find_swapped_pairs(fixed_points, moving_points, kind: str = "rigid") -> SwapCheck:
    """Greedy search over exchanges of two moving points: keep the exchange that lowers the RMS error of
    the fit most while it at least halves it, and repeat."""
    fixed, moving = check_landmarks(fixed_points, moving_points, "rigid")
    kind = _check_kind(kind, len(fixed))
    spread = float(np.sqrt(np.mean(np.sum((fixed - fixed.mean(axis=0)) ** 2, axis=1))))
    current = _rms(fixed, moving, kind)
    check = SwapCheck(rms_before=current, rms_after=current, spread_ratio=current / spread)
    pairs = [(i, j) for i in range(len(fixed)) for j in range(i + 1, len(fixed))]
    for _ in range(len(fixed) // 2):
        if current < SWAP_MIN_RMS_MM:
            break
        best, best_pair = current, None
        for i, j in pairs:
            trial = moving.copy()
            trial[[i, j]] = trial[[j, i]]
            rms = _rms(fixed, trial, kind)
            if rms < best:
                best, best_pair = rms, (i, j)
        if best_pair is None or best > SWAP_GAIN * current:
            break
        moving[list(best_pair)] = moving[list(best_pair[::-1])]
        check.swapped_pairs.append(best_pair)
        current = best
    check.rms_after = current
    return check


@dataclass
class DirectionCheck:
    """The fit both ways: RMS errors (each in its To list's space), how far the backward fit is from the
    forward fit's inverse, the scale, and the RMS one gets by mapping the wrong list."""

    forward_rms: float
    backward_rms: float
    inverse_residual_mm: float
    scale: float
    wrong_list_rms: float

    def warnings(self) -> list[str]:
        found = []
        if not (1 / SCALE_WARNING < self.scale < SCALE_WARNING):
            found.append(f"the similarity scale is {self.scale:.2f}: the lists look like different units or one "
                         "image has a wrong voxel spacing; the RMS error is in the To list's units, so swapping "
                         f"the lists changes it by this factor ({self.forward_rms:.1f} vs {self.backward_rms:.1f})")
        return found

    def as_dict(self) -> dict:
        return {key: round(float(value), 4) for key, value in vars(self).items()}


def direction_check(fixed_points, moving_points, kind: str = "rigid") -> DirectionCheck:
    """Fit fixed->moving and moving->fixed with a linear `kind` and compare (see the module docstring)."""
    fixed, moving = check_landmarks(fixed_points, moving_points, kind)
    kind = _check_kind(kind, len(fixed))
    forward, backward = linear_fit(fixed, moving, kind), linear_fit(moving, fixed, kind)
    round_trip = distances(backward @ forward, fixed, fixed)
    return DirectionCheck(
        forward_rms=_rms(fixed, moving, kind),
        backward_rms=_rms(moving, fixed, kind),
        inverse_residual_mm=float(round_trip.max()),
        scale=float(np.cbrt(abs(np.linalg.det(forward[:3, :3])))),
        wrong_list_rms=float(np.sqrt(np.mean(distances(forward, moving, fixed) ** 2))),
    )
