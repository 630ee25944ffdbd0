"""A second chance for a registration whose quality verdict is `failed`.

The pose search keeps its next distinct candidates (other basins, and the best mirrored pose) in
metrics["initialization"]["alternatives"]. When the first result fails the assessment, the registration is
run again from each of them in turn, through the same refinement and the same assessment, until one is not
`failed`; the best verdict wins (ties: the earlier, so a result is replaced only by a better verdict).
Results that did not fail, and results whose start pose was not searched (given, landmarks), are returned as
they are: the second chance costs nothing on them. Mirrored candidates are tried only when mirrored images are accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from ..registration.initialization import try_candidate_starts
from ..registration.pipeline import RegistrationOptions, RegistrationResult, register_images
from .assess import QAResult
from .verdict import CHECK, FAILED, OK

MAX_TRIES = 3
VERDICT_ORDER = {OK: 0, CHECK: 1, FAILED: 2}


def retry_if_failed(
    fixed: sitk.Image,
    moving: sitk.Image,
    result: RegistrationResult,
    qa: QAResult,
    options: RegistrationOptions,
    assess_result: Callable[[RegistrationResult], QAResult],
    cancelled: Callable[[], bool] | None = None,
) -> tuple[RegistrationResult, QAResult]:
    """`result` and its assessment `qa` when the verdict is not `failed` or nothing is left to try; otherwise
    the best assessed result among it and registrations from the search's next candidates. `assess_result`
    assesses one result (as the caller assessed `result`). The winner's metrics["initialization"]
    ["second_chance"] says what was tried and why the winner won."""
    initialization = result.metrics.get("initialization", {})
    if qa.verdict != FAILED or not initialization.get("alternatives") or options.initial_matrix is not None:
        return result, qa
    started = time.perf_counter()

    def attempt(start: np.ndarray) -> tuple[RegistrationResult, QAResult]:
        retry = register_images(fixed, moving, replace(options, initial_matrix=start), cancelled=cancelled)
        return retry, assess_result(retry)

    swapped = (result.fixed_modality, result.moving_modality) == ("MR", "CT")  # the search ran CT-fixed
    starts = try_candidate_starts(initialization, swapped, attempt, done=lambda outcome: outcome[1].verdict != FAILED,
                                  include_mirrored=options.accept_mirror, limit=MAX_TRIES)
    if not starts:
        return result, qa
    tried = [{"start": "search winner", "score": initialization.get("score"), "verdict": qa.verdict,
              "reasons": qa.reasons}]
    tried += [{"start": start.label, "score": start.candidate["score"],
               "verdict": None if start.error else start.outcome[1].verdict,
               "reasons": [str(start.error)] if start.error else start.outcome[1].reasons} for start in starts]
    assessed = [(result, qa, "search winner", False)] + [
        (*start.outcome, start.label, start.candidate["mirrored"]) for start in starts if start.error is None]
    best = min(range(len(assessed)), key=lambda i: (VERDICT_ORDER[assessed[i][1].verdict], i))
    winner, winner_qa, winning_start, mirrored = assessed[best]
    winner.metrics["initialization"] = initialization | {"second_chance": {
        "why": "the first result's verdict was failed",
        "tried": tried,
        "winner": winning_start,
        "because": (f"its verdict is {winner_qa.verdict}" if best else
                    "no other candidate did better: the result stays failed"),
        "seconds": round(time.perf_counter() - started, 3),
    }}
    if mirrored:
        winner.metrics["mirrored"] = True
        winner.warnings.append("the moving image appears mirrored (left-right flip in its header?)")
    winner.seconds = sum(entry[0].seconds for entry in assessed)
    return winner, winner_qa
