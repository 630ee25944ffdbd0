"""The quality verdict: `ok`, `check` or `failed`, with the reasons in words, and the error bound beside it.
Every threshold and constant is here.

Each cue is graded on its own: beyond its `check` limit it is a doubt, beyond its `failed` limit it is
evidence of failure. The verdict is `failed` when one cue is evidence of failure or two families of cues are in
doubt, `check` when one is in doubt, `ok` otherwise. Cues of one family read the same evidence, so their doubts
count once: the two edge cues (overall alignment and the share of regions that agree), and the three restart
cues (drift, spread, offset). Cues that were not computed (None or absent) do not count. No cue needs ground
truth: target points and segmentations are reported, never graded.

Every cue is the same whichever image is fixed (see `assess`), so the verdict and the bound are too. Limits and
the bound's constants are chosen on the choice half of bench/qa_calibration.py's labelled set and reported on
its held-out half (docs/validation.md). The restart offset carries the verdict below gross failure: short
restarts from around a result settle where the metric's optimum is, so their mean end is about as far from the
result as the result is from that optimum. On the labelled set every result beyond 10 mm reads `failed`, several
of them on the restart cues alone. Human T1 MR and CT share fewer edges than the phantom's T2 and CT, so correct
thigh results often read one edge doubt (`check`); the peak contrast catches a wrong pose whose edges do not peak
at it even when the restarts return to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OK, CHECK, FAILED = "ok", "check", "failed"


@dataclass(frozen=True)
class Limit:
    """Grades one cue: `higher_is_better` tells which side of the limits is bad."""

    cue: str
    check: float
    failed: float
    higher_is_better: bool
    words: str  # what a bad value means, completed by the value and the limit
    family: str = ""  # cues of one family read the same evidence: their doubts count once

    def grade(self, value) -> str:
        if value is None:
            return OK
        worse = (lambda limit: value < limit) if self.higher_is_better else (lambda limit: value > limit)
        return FAILED if worse(self.failed) else CHECK if worse(self.check) else OK

    def reason(self, value, grade: str) -> str:
        limit = self.failed if grade == FAILED else self.check
        side = "below" if self.higher_is_better else "above"
        return f"{self.words}: {self.cue} = {value:g} ({side} {limit:g})"


LIMITS = (
    Limit("view_coverage", 0.20, 0.10, True, "neither image sees most of the other's object under the transform"),
    Limit("foreground_overlap", 0.80, 0.60, True, "the objects' outlines do not overlap well"),
    Limit("edge_alignment", 1.70, 1.40, True, "edges of the two images do not line up much better than chance",
          "edges"),
    Limit("edge_agreeing_regions", 0.70, 0.50, True, "edges line up in too few regions of the object", "edges"),
    Limit("edge_peak_contrast", 0.08, 0.0, True, "edge alignment does not peak at the result (shifting it a few mm "
          "does as well)"),
    Limit("restart_offset_mm", 5.0, 8.0, False, "registrations restarted near the result settle on average away "
          "from it", "restarts"),
    Limit("restart_drift_mm", 8.0, 15.0, False, "registrations restarted near the result end elsewhere", "restarts"),
    Limit("restarts_without_overlap", 0.0, 0.0, False, "registrations restarted near the result lose the overlap "
          "of the images"),
    Limit("restart_spread_mm", 5.0, 10.0, False, "registrations restarted near the result disagree with each other",
          "restarts"),
    Limit("inverse_consistency_p95_mm", 6.0, 12.0, False, "the registration in the opposite direction does not "
          "invert the result"),
    Limit("folding_percent", 0.0, 1.0, False, "the deformation folds space (Jacobian determinant <= 0)"),
)


@dataclass
class Verdict:
    verdict: str
    reasons: list[str]


def grade_cues(metrics: dict) -> Verdict:
    """The verdict from a metrics dict holding any of the cues of LIMITS."""
    failed, doubts, doubted = [], [], set()
    for limit in LIMITS:
        value = metrics.get(limit.cue)
        grade = limit.grade(value)
        if grade == FAILED:
            failed.append(limit.reason(value, grade))
        elif grade == CHECK:
            doubts.append(limit.reason(value, grade))
            doubted.add(limit.family or limit.cue)
    if failed or len(doubted) >= 2:
        return Verdict(FAILED, failed + doubts)
    return Verdict(CHECK if doubts else OK, doubts)


ERROR_FLOOR_MM = 5.0  # what the restarts cannot see: deformation that no rigid transform follows, bias of the metric


def error_bound_mm(metrics: dict) -> float | None:
    """An upper bound on the result's p95 error (mm) from the restart offset: sqrt(offset^2 + ERROR_FLOOR_MM^2).
    Fitted on the choice half of bench/qa_calibration.py's labelled set (at least 95 % covered, the median
    bound / true error as small as possible); None without restarts."""
    offset = metrics.get("restart_offset_mm")
    if offset is None:
        return None
    return round(float(np.hypot(offset, ERROR_FLOOR_MM)), 1)


def bound_text(bound: float | None) -> str:
    """The bound as the command lines and the panel show it beside the verdict ('' without one)."""
    return "" if bound is None else f" (error bound: p95 <= {bound} mm)"
