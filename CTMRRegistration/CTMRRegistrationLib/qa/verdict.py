"""The quality verdict: `ok`, `check` or `failed`, with the reasons in words. Every threshold is here.

Each cue is graded on its own: beyond its `check` limit it is a doubt, beyond its `failed` limit it is
evidence of failure. The verdict is `failed` when one cue is evidence of failure or two cues are in doubt,
`check` when one cue is in doubt, `ok` otherwise. The two edge cues (overall alignment and the share of
regions that agree) read the same evidence, so their doubts count as one. Cues that were not computed (None
or absent) do not count. No cue needs ground truth: target points and segmentations are reported, never graded.

Limits, set on the bundled porcine pair and checked on the capture benchmark's cases
(bench/qa_benchmark.py). Cue values measured on the 2 mm pair (coverage, overlap, edge alignment, agreeing
regions, peak contrast, restart drift and spread in mm):
- reference transform:                1.00  0.955  1.97  0.90  0.137   1.3   0.1   ok
- 20 mm / 15 degrees off:             0.99  0.826  1.37  0.48  0.015  12.1  23.4   failed
- turned 180 degrees about x, y, z:   1.00  0.89-0.92  1.50-1.65  0.57-0.61  0.03-0.06  10-19  8-25  failed
- shifted 5 mm (p95 error 5 mm):      1.00  0.924  1.86  0.83  0.069   4.8   0.1   ok
- our pipeline's results (3.2-3.4 mm from the reference): overlap 0.95, alignment >= 2.0, regions >= 0.91,
  contrast >= 0.13, drift 3.9-4.4 mm (the short refinement runs on the MR without bias correction and lands
  about 4 mm from the pipeline's optimum), spread <= 1.5 mm.
On the human thigh pairs (T1 MR, CT; sts-thigh) correct results read lower edge cues: STS_002 edge alignment
1.47-1.67 and agreeing regions 0.55-0.81 (counted as one doubt: `check`), while 10 mm along the limb or 8 degrees
off give 1.32-1.49 / 0.42-0.58 with restart drift 10-15 mm, and 180 degrees 1.21-1.35 (all `failed`).
A wrong thigh pose 22 mm off that restarts return to (drift 2.8 mm) reads 1.57 / 0.56 too: its edges do not
peak at it (contrast 0.065, correct thigh results 0.14-0.20, the phantom's 0.12-0.15), hence the contrast's
`check` limit of 0.08 (it was 0.05: the phantom's failures read 0.02-0.06).
With the restarts at 300 iterations (150 when the limits above were set) the phantom's reference reads drift
1.2 mm / spread 0.1 mm and our pipeline's result 3.8 / 0.7 mm; right thigh results 0.7-1.8 mm drift.
The cues separate gross failures (wrong orientation, local optima tens of mm away) with wide margins; errors
of 5 to 8 mm sit inside the spread of correct results and are not reliably flagged.

Partial views: where either image shows less than PARTIAL_VIEW_COVERAGE of the other's object, the metric's
optimum is flat along the cut, and restarts of a right result can wander: a phantom CT against an MR holding 40 %
of its slices, 0.6 mm from the result reached from the truth, read edges 1.84 / 0.86 / contrast 0.17 but restart
drift 11.2 and spread 12.7 mm, while the wrong candidates of the same case read edge alignment 1.53-1.60. There,
when every edge cue is within its limits, the restart cues are one doubt together (`check`), not a failure.
Gross failures never read all edge cues within limits (best: alignment 1.64, regions 0.63, contrast 0.06).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    Limit("object_coverage", 0.20, 0.10, True, "the transform maps most of the fixed object outside the moving "
          "image"),
    Limit("foreground_overlap", 0.80, 0.60, True, "the objects' outlines do not overlap well"),
    Limit("edge_alignment", 1.70, 1.40, True, "edges of the two images do not line up much better than chance",
          "edges"),
    Limit("edge_agreeing_regions", 0.70, 0.50, True, "edges line up in too few regions of the object", "edges"),
    Limit("edge_peak_contrast", 0.08, 0.0, True, "edge alignment does not peak at the result (shifting it a few mm "
          "does as well)"),
    Limit("restart_drift_mm", 8.0, 15.0, False, "registrations restarted near the result end elsewhere"),
    Limit("restarts_without_overlap", 0.0, 0.0, False, "registrations restarted near the result lose the overlap "
          "of the images"),
    Limit("restart_spread_mm", 5.0, 10.0, False, "registrations restarted near the result disagree with each other"),
    Limit("inverse_consistency_p95_mm", 6.0, 12.0, False, "the registration in the opposite direction does not "
          "invert the result"),
    Limit("folding_percent", 0.0, 1.0, False, "the deformation folds space (Jacobian determinant <= 0)"),
)


PARTIAL_VIEW_COVERAGE = 0.7  # object_coverage below this is a partial view (the stage guard's bar too)
EDGE_CUES = ("edge_alignment", "edge_agreeing_regions", "edge_peak_contrast")
RESTART_CUES = ("restart_drift_mm", "restart_spread_mm")


@dataclass
class Verdict:
    verdict: str
    reasons: list[str]


def _edges_vouch_on_a_partial_view(metrics: dict) -> bool:
    """Whether either image shows only part of the other's object and every edge cue is within its limits."""
    coverage = min((metrics[cue] for cue in ("object_coverage", "moving_object_coverage")
                    if metrics.get(cue) is not None), default=1.0)
    edges = [limit for limit in LIMITS if limit.cue in EDGE_CUES]
    return (coverage < PARTIAL_VIEW_COVERAGE
            and all(metrics.get(limit.cue) is not None and limit.grade(metrics[limit.cue]) == OK for limit in edges))


def grade_cues(metrics: dict) -> Verdict:
    """The verdict from a metrics dict holding any of the cues of LIMITS."""
    failed, doubts, doubted = [], [], set()
    restarts_doubt_only = _edges_vouch_on_a_partial_view(metrics)
    for limit in LIMITS:
        value = metrics.get(limit.cue)
        grade = limit.grade(value)
        if restarts_doubt_only and limit.cue in RESTART_CUES and grade != OK:
            doubts.append(limit.reason(value, grade))
            doubted.add("restarts")
        elif grade == FAILED:
            failed.append(limit.reason(value, grade))
        elif grade == CHECK:
            doubts.append(limit.reason(value, grade))
            doubted.add(limit.family or limit.cue)
    if failed or len(doubted) >= 2:
        return Verdict(FAILED, failed + doubts)
    return Verdict(CHECK if doubts else OK, doubts)
