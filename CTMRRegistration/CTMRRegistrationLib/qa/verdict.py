"""The quality verdict: `ok`, `check` or `failed`, with the reasons in words. Every threshold is here.

Each cue is graded on its own: beyond its `check` limit it is a doubt, beyond its `failed` limit it is
evidence of failure. The verdict is `failed` when one cue is evidence of failure or two cues are in doubt,
`check` when one cue is in doubt, `ok` otherwise. The two edge cues (overall alignment and the share of
regions that agree) read the same evidence, so their doubts count as one. Cues that were not computed (None
or absent) do not count. No cue needs ground truth: target points and segmentations are reported, never graded.

Limits are set on the bundled porcine pair and checked on the capture and QA benchmarks
(bench/qa_benchmark.py); docs/validation.md holds the cue values measured there. The cues separate gross
failures (wrong orientation, local optima tens of mm away) with wide margins; errors of 5 to 8 mm sit inside the
spread of correct results and are not reliably flagged. Human T1 MR and CT share fewer edges than the phantom's
T2 and CT, so correct thigh results read one edge doubt (`check`); the peak contrast catches a wrong pose whose
edges do not peak at it even when the restarts return to it.

Partial views: where either image shows less than PARTIAL_VIEW_COVERAGE of the other's object, the metric's
optimum is flat along the cut and restarts of a right result can wander. There, when every edge cue is within
its limits, the restart cues are one doubt together (`check`), not a failure: no gross failure measured has had
all its edge cues within limits.
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
