"""Global initialisation: find the pose of the moving image without assuming one.

The 24 axis-aligned rotations and about a thousand more spread evenly over all orientations are each
combined with the translation that centres the masks, and scored at coarse resolution (see
`pose_scoring`). The best-scoring rotations also get the translations that best place one field of view
inside the other (see `translation_search`), for images that show different extents of the object. The
best distinct poses of the sweep, and the best of those translated poses, climb the same score locally
(see `local_search`: the sweep is too sparse for a pose near the truth to score near its best); the best
distinct poses they reach (by rotation, or by where they map the fixed object) are refined locally (Mattes
MI inside the fixed mask) and re-scored; the best wins, and the others are kept, ranked, for a second
chance (see `qa.second_chance`).
The same search on a mirrored moving image, scored on the same scale, tells whether the moving header looks
left-right flipped; it leaves the translated poses out, so that calling an image mirrored takes a clear win (a
limb's cross-section fits almost as well mirrored, and a false call leaves the user with nothing).
Everything is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

from ..core.errors import NoOverlapError
from ..core.imaging import own_copy
from ..core.rotations import angle_between, search_rotations
from .coarse_view import SEED, CoarseView
from .local_search import climb
from .pose_scoring import CUES, PoseScorer
from .translation_search import TranslationSearch

SEARCH_SPACING_MM = 5.0
EVEN_ROTATIONS = 1000
REFINED_CANDIDATES = 8
CLIMBED_PER_REFINED = 2  # sweep poses that climb the score, per refined candidate (as many translated ones)
MIRROR_REFINED_CANDIDATES = 2
DISTINCT_DEGREES = 25.0
MIRROR_MARGIN = 1.5
TRANSLATION_SEARCHED = 48  # best-scoring rotations whose translation is also searched by correlation
DISTINCT_MM = 30.0
ALTERNATIVES = 4  # ranked candidates kept for a second chance
CUE_RESOLUTION = 0.01  # 1 % of each cue's range (Dice, edges: 0-1; NMI: 1-2); a one-voxel shift moves cues 1-4 %


def _refine(fixed: CoarseView, moving: CoarseView, matrix: np.ndarray, threads: int | None) -> np.ndarray:
    """Local rigid refinement of a pose at coarse resolution and half that (Mattes MI in the fixed mask)."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(fixed.centroid.tolist())
    transform.SetMatrix(matrix[:3, :3].ravel().tolist(), 1e-4)
    transform.SetTranslation((matrix[:3, 3] + matrix[:3, :3] @ fixed.centroid - fixed.centroid).tolist())
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(24)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(0.25, SEED)
    method.SetMetricFixedMask(sitk.BinaryDilate(fixed.mask, [2, 2, 2]))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(3.0, 0.05, 150, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SetInitialTransform(transform, inPlace=True)
    if threads:
        method.SetNumberOfThreads(threads)
    try:
        method.Execute(fixed.image, moving.image)
    except RuntimeError:
        return matrix
    refined = np.eye(4)
    refined[:3, :3] = np.asarray(transform.GetMatrix()).reshape(3, 3)
    refined[:3, 3] = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    return refined


def _refine_each(fixed: CoarseView, moving: CoarseView, poses: list[np.ndarray], threads: int | None
                 ) -> list[np.ndarray]:
    """`_refine` of each pose, two at a time (each on its own copy of the images: see own_copy)."""
    def refine(pose: np.ndarray) -> np.ndarray:
        own_fixed = replace(fixed, image=own_copy(fixed.image), mask=own_copy(fixed.mask))
        return _refine(own_fixed, replace(moving, image=own_copy(moving.image)), pose, threads)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(refine, poses))


class _ScoreScale:
    """Combines cues into one score: the sum of their z-scores over all candidates of the sweep.

    A cue's spread is taken as at least CUE_RESOLUTION: a cue that barely varies over the sweep (the Dice of
    a CT lying wholly inside the MR's object) would otherwise turn its sampling noise into the largest term."""

    def __init__(self, cues: np.ndarray):
        valid = cues[~np.isnan(cues).any(axis=1)]
        self.mean, self.std = valid.mean(axis=0), np.maximum(valid.std(axis=0), CUE_RESOLUTION)

    def scores(self, cues: np.ndarray) -> np.ndarray:
        """The scores of (n, cues) rows; -inf where a cue is missing."""
        scores = np.sum((cues - self.mean) / self.std, axis=1)
        return np.where(np.isnan(scores), -np.inf, scores)


@dataclass
class SearchResult:
    """The refined fixed->moving poses (4x4 LPS) of one search, best first, with their combined scores."""

    poses: list[np.ndarray]
    scores: list[float]
    cues: dict  # of the best pose
    candidates_scored: int
    sweep_rank: int  # rank, among the refined candidates before re-scoring, of the one that won
    scale: _ScoreScale

    @property
    def matrix(self) -> np.ndarray:
        return self.poses[0]

    @property
    def score(self) -> float:
        return self.scores[0]

    @property
    def runner_up_score(self) -> float | None:
        return self.scores[1] if len(self.scores) > 1 else None


def _distinct(pose: np.ndarray, other: np.ndarray, centre: np.ndarray | None) -> bool:
    """Whether two poses differ by more than DISTINCT_DEGREES, or (with `centre`, a fixed point) map `centre`
    more than DISTINCT_MM apart."""
    if angle_between(pose, other) > DISTINCT_DEGREES:
        return True
    return centre is not None and np.linalg.norm((pose - other)[:3] @ np.append(centre, 1.0)) > DISTINCT_MM


def _distinct_best(poses, scores: np.ndarray, count: int, centre: np.ndarray | None = None,
                   taken: list[np.ndarray] = ()) -> list[np.ndarray]:
    """The best-scoring `count` poses distinct from each other and from `taken`."""
    chosen: list[np.ndarray] = list(taken)
    for index in np.argsort(-scores):
        if len(chosen) == len(taken) + count or not np.isfinite(scores[index]):
            break
        if all(_distinct(poses[index], other, centre) for other in chosen):
            chosen.append(poses[index])
    return chosen[len(taken):]


def _with_searched_translations(fixed: CoarseView, moving: CoarseView, poses: np.ndarray,
                                scores: np.ndarray) -> np.ndarray:
    """The rotations of the best-scoring poses, each with the translations found by correlation."""
    search = TranslationSearch(fixed, moving)
    shifted = []
    for index in np.argsort(-scores)[:TRANSLATION_SEARCHED]:
        for translation in search.translations(poses[index]):
            pose = poses[index].copy()
            pose[:3, 3] = translation
            shifted.append(pose)
    return np.array(shifted).reshape(-1, 4, 4)


@dataclass
class Sweep:
    """Every candidate rotation of the sweep with its centred translation, and their cues."""

    scorer: PoseScorer
    poses: np.ndarray
    cues: np.ndarray

    @classmethod
    def run(cls, fixed: CoarseView, moving: CoarseView) -> Sweep:
        scorer = PoseScorer(fixed, moving)
        poses = scorer.poses(search_rotations(EVEN_ROTATIONS))
        cues = scorer.cues(poses)
        if np.isnan(cues).all():
            raise NoOverlapError("no orientation brings the two objects into a common field of view")
        return cls(scorer, poses, cues)


def search_pose(fixed: CoarseView, moving: CoarseView, refined_candidates: int = REFINED_CANDIDATES,
                threads: int | None = None, scale: _ScoreScale | None = None,
                translations: bool = True, sweep: Sweep | None = None) -> SearchResult:
    """Score every candidate pose, refine the best distinct few, return them ranked by their refined score.

    `scale`: the score scale of another search (the proper one, for the mirrored search), so that the two
    searches' scores compare; by default the scale of this search's own sweep. `translations`: also try the
    translations found by correlation (see `translation_search`). `sweep`: this search's sweep, when done."""
    sweep = sweep or Sweep.run(fixed, moving)
    scorer, poses, cues = sweep.scorer, sweep.poses, sweep.cues
    scale = scale or _ScoreScale(cues)
    scores = scale.scores(cues)
    shifted = _with_searched_translations(fixed, moving, poses, scores) if translations else np.zeros((0, 4, 4))
    starts = _distinct_best(poses, scores, CLIMBED_PER_REFINED * refined_candidates)
    starts += _distinct_best(shifted, scale.scores(scorer.cues(shifted)) if len(shifted) else np.zeros(0),
                             CLIMBED_PER_REFINED * refined_candidates, fixed.centroid, starts)
    climbed, climbed_scores = climb(np.array(starts), lambda p: scale.scores(scorer.cues(p)), fixed.centroid)
    chosen = _distinct_best(climbed, climbed_scores, refined_candidates, fixed.centroid)
    refined = _refine_each(fixed, moving, chosen, threads)
    refined_cues = scorer.cues(np.array(refined))
    refined_scores = scale.scores(refined_cues)
    order = np.argsort(-refined_scores)
    return SearchResult(
        poses=[refined[i] for i in order],
        scores=[float(refined_scores[i]) for i in order],
        cues=dict(zip(CUES, map(float, refined_cues[order[0]]))),
        candidates_scored=len(poses) + len(shifted),
        sweep_rank=int(order[0]),
        scale=scale,
    )


@dataclass
class Initialization:
    """Outcome of the initialisation stage: a fixed->moving 4x4 LPS matrix and how it was found."""

    matrix: np.ndarray
    method: str
    mirrored: bool = False
    details: dict = field(default_factory=dict)


def centre_initialization(fixed: sitk.Image, moving: sitk.Image) -> Initialization:
    """Translation that maps the fixed image's geometric centre onto the moving image's."""
    def centre(image):
        return np.asarray(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))

    matrix = np.eye(4)
    matrix[:3, 3] = centre(moving) - centre(fixed)
    return Initialization(matrix, "center")


def _alternatives(proper: SearchResult, mirror: SearchResult | None, reflect: np.ndarray) -> list[dict]:
    """The runners-up of the search (and the best mirrored pose), best first, as JSON-ready candidates."""
    found = [{"matrix": pose.round(9).tolist(), "score": round(score, 4), "mirrored": False}
             for pose, score in zip(proper.poses[1:], proper.scores[1:])]
    if mirror is not None:
        found.append({"matrix": (reflect @ mirror.matrix).round(9).tolist(), "score": round(mirror.score, 4),
                      "mirrored": True})
    found.sort(key=lambda candidate: -candidate["score"])
    return found[:ALTERNATIVES]


def _mirror_decision(score: float, mirrored_score: float) -> dict:
    margin = mirrored_score - score
    if margin > MIRROR_MARGIN:
        words = f"the mirrored image fits better by {margin:.2f} (more than {MIRROR_MARGIN})"
    elif margin > -MIRROR_MARGIN:
        words = (f"close: the mirrored image scores {margin:+.2f} against the image as it is, within the "
                 f"{MIRROR_MARGIN} needed to call it mirrored")
    else:
        words = f"the image as it is fits better by {-margin:.2f}"
    return {"score": round(mirrored_score, 4), "margin": round(margin, 4), "mirrored": margin > MIRROR_MARGIN,
            "decision": words}


def search_initialization(
    fixed: sitk.Image, moving: sitk.Image, fixed_modality: str, moving_modality: str,
    threads: int | None = None, check_mirror: bool = True,
) -> Initialization:
    """Global pose search; with `check_mirror`, also on the left-right mirrored moving image.

    `details` (reported as metrics["initialization"]) holds the winner's score and cues, the mirror
    decision, and `alternatives`: the next distinct candidates with their fixed->moving matrices."""
    fixed_view = CoarseView.build(fixed, fixed_modality, SEARCH_SPACING_MM)
    moving_view = CoarseView.build(moving, moving_modality, SEARCH_SPACING_MM)
    sweep = Sweep.run(fixed_view, moving_view)
    scale = _ScoreScale(sweep.cues)  # the mirrored search scores on the proper one's scale: it can run beside
    mirror, reflect = None, np.eye(4)
    with ThreadPoolExecutor(max_workers=1) as background:
        if check_mirror:
            mirrored_view = moving_view.mirrored()
            reflect = mirrored_view.physical_from_index @ moving_view.index_from_physical
            mirror = background.submit(search_pose, fixed_view, mirrored_view, MIRROR_REFINED_CANDIDATES, threads,
                                       scale, False)
        proper = search_pose(fixed_view, moving_view, threads=threads, scale=scale, sweep=sweep)
        mirror = mirror.result() if mirror is not None else None
    details = {"method": "search", "score": proper.score, "runner_up_score": proper.runner_up_score,
               "cues": proper.cues, "candidates": proper.candidates_scored, "sweep_rank": proper.sweep_rank}
    if mirror is not None:
        details["mirrored_score"] = mirror.score
        details["mirror"] = _mirror_decision(proper.score, mirror.score)
    details["alternatives"] = _alternatives(proper, mirror, reflect)
    if mirror is not None and details["mirror"]["mirrored"]:
        return Initialization(reflect @ mirror.matrix, "search", mirrored=True, details=details)
    return Initialization(proper.matrix, "search", details=details)


@dataclass
class CandidateStart:
    """One start from the pose search's next candidates: its label, the candidate, and what came of it."""

    label: str  # "search candidate 2", "search candidate 3 (mirrored)", ...
    candidate: dict
    outcome: object = None  # what the attempt returned
    error: NoOverlapError | None = None  # the attempt lost the overlap


def try_candidate_starts(search: dict, swapped: bool, attempt: Callable[[np.ndarray], object],
                         done: Callable[[object], bool], include_mirrored: bool = False,
                         limit: int = ALTERNATIVES) -> list[CandidateStart]:
    """The one walk over the search's next candidates (`search["alternatives"]`, in rank order; mirrored ones
    only with `include_mirrored`, at most `limit`): `attempt(start)` from each, where `start` is the fixed->moving
    matrix in the requested direction (`swapped`: the search ran with the images exchanged), until
    `done(outcome)`. A start whose registration loses the overlap is kept with its error and the next is tried."""
    tried = []
    candidates = [c for c in search.get("alternatives", []) if include_mirrored or not c["mirrored"]]
    for rank, candidate in enumerate(candidates[:limit], start=2):
        matrix = np.asarray(candidate["matrix"], dtype=float)
        label = f"search candidate {rank}" + (" (mirrored)" if candidate["mirrored"] else "")
        try:
            outcome = attempt(np.linalg.inv(matrix) if swapped else matrix)
        except NoOverlapError as error:
            tried.append(CandidateStart(label, candidate, error=error))
            continue
        tried.append(CandidateStart(label, candidate, outcome))
        if done(outcome):
            break
    return tried
