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

from ..core.errors import NoOverlapError
from ..registration.pipeline import RegistrationOptions, RegistrationResult, register_images
from .assess import QAResult
from .verdict import CHECK, FAILED, OK

MAX_TRIES = 3
VERDICT_ORDER = {OK: 0, CHECK: 1, FAILED: 2}


def _start_pose(candidate: dict, result: RegistrationResult) -> np.ndarray:
    """The candidate's fixed->moving matrix in the requested direction (the search runs with the CT fixed)."""
    matrix = np.asarray(candidate["matrix"], dtype=float)
    swapped = (result.fixed_modality, result.moving_modality) == ("MR", "CT")
    return np.linalg.inv(matrix) if swapped else matrix


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
    candidates = [c for c in initialization.get("alternatives", []) if options.accept_mirror or not c["mirrored"]]
    if qa.verdict != FAILED or not candidates or options.initial_matrix is not None:
        return result, qa
    started = time.perf_counter()
    tried = [{"start": "search winner", "score": initialization.get("score"), "verdict": qa.verdict,
              "reasons": qa.reasons}]
    assessed = [(result, qa, tried[0]["start"], False)]  # (result, its assessment, its start, mirrored)
    for rank, candidate in enumerate(candidates[:MAX_TRIES], start=2):
        start = f"search candidate {rank}" + (" (mirrored)" if candidate["mirrored"] else "")
        try:
            retry = register_images(fixed, moving, replace(options, initial_matrix=_start_pose(candidate, result)),
                                    cancelled=cancelled)
        except NoOverlapError as error:  # this start leads nowhere; the others may
            tried.append({"start": start, "score": candidate["score"], "verdict": None, "reasons": [str(error)]})
            continue
        retry_qa = assess_result(retry)
        assessed.append((retry, retry_qa, start, candidate["mirrored"]))
        tried.append({"start": start, "score": candidate["score"], "verdict": retry_qa.verdict,
                      "reasons": retry_qa.reasons})
        if retry_qa.verdict != FAILED:
            break
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
