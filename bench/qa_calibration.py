"""QA calibration: the quality verdict and the error bound against exact truth, each way, on a labelled set.

The labelled set is built from every pair at hand, each with a base result: our rigid registration of the pair
started at its external reference (the porcine MI reference; identity for the thighs, as aligned by the
dataset's makers). Truth is relative to that base: the base is a good registration, not the anatomy (the
phantom deformed between its scans, so no rigid transform is better than about 2 mm there; on the partial thigh
views the base can sit several mm from the makers' alignment, and the line `base vs external reference` says how
far). Pairs:
- phantom 2 mm (the bundled pair), phantom full resolution, and three crops of it (capture_sets.PHANTOM_CROPS);
- the thighs STS_002 and STS_003, each as given and in two partial views (capture_sets.THIGH_CROPS);
- synthetic warps: the bundled MR deformed by a known smooth warp (ground_truth.synthetic_warp), whose rigid base
  is wrong by the part of the warp that no rigid transform explains (truth through the known warp).
Cases per pair: the base; the external reference; the base degraded by translations of 0.5, 1, 2, 3, 5, 10 and
20 mm (random directions) and by rotations of 1, 2, 5 and 10 degrees about random axes through the centre of
the shared object; and one registration from a random pose of the MR's header (the full pipeline from scratch,
truth: the pose composed with the base). The true error of a result is the p95 distance from the truth, both
ways over the points of both objects where the other image sees them (consistency.distances_both_ways), so it
is the same whichever image is fixed. Every case is assessed twice, CT fixed and MR fixed (the inverse), by
`qa.assess` with its defaults (two restarts).

Halves: pairs are split into a choice half (the limits and the bound's constants are chosen on it) and a
held-out half (reported on it), by pair, so that held-out pairs are images the choice never saw:
    choice:   phantom 2 mm, phantom MR 40 % of its slices, phantom both partial, STS_002 (3 views), warp seed 1
    held-out: phantom full resolution, phantom CT 50 % in x and y, STS_003 (3 views), warp seed 2

Prints per case the true error, each direction's verdict and bound; then per half and direction the confusion
table (truth band x verdict), the false-alarm rate (within 2 mm that read failed), the silent rate (beyond 10
mm that read ok or check), how many 3-10 mm results read check or failed, the verdicts that differ between
the directions, and the bound's coverage (share of cases whose true error is below it) and its median ratio to
the true error.

    python bench/qa_calibration.py [--threads 2] [--halves choice,held-out] [--json runs.jsonl]
    python bench/qa_calibration.py --from runs.jsonl      # re-grade stored cues with the current limits
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, p95, transform_points
from CTMRRegistrationLib.qa.assess import QAOptions, assess
from CTMRRegistrationLib.qa.consistency import SharedPoints, distances_both_ways, shared_points
from CTMRRegistrationLib.qa.images import prepare_qa_images, qa_grid
from CTMRRegistrationLib.qa.verdict import LIMITS, error_bound_mm, grade_cues

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "CTMRRegistration" / "Testing" / "Python"))
from capture_benchmark import random_poses  # noqa: E402
from capture_sets import PHANTOM_CROPS, THIGH_CROPS, crop  # noqa: E402
from ground_truth import move_header, synthetic_warp  # noqa: E402

TRANSLATIONS_MM = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
ROTATIONS_DEGREES = (1.0, 2.0, 5.0, 10.0)
BANDS = (("<= 2 mm", 0.0, 2.0), ("2-3 mm", 2.0, 3.0), ("3-5 mm", 3.0, 5.0), ("5-10 mm", 5.0, 10.0),
         ("> 10 mm", 10.0, np.inf))
VERDICTS = ("ok", "check", "failed")
DIRECTIONS = ("CT fixed", "MR fixed")
CHOICE, HELD_OUT = "choice", "held-out"


def shared_data() -> Path:
    folder = os.environ.get("CTMR_SHARED_DATA")
    return (Path(folder).parent if folder else HERE.parent.parent / "shared" / "data")


@dataclass
class Pair:
    """A CT/MR pair, its external reference (CT->MR) and, for a synthetic warp, the warp and the unwarped
    pair's base."""

    name: str
    half: str
    ct: sitk.Image
    mr: sitk.Image
    reference: np.ndarray
    warp: object = None
    unwarped_base: np.ndarray | None = None


def read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def pairs(shared: Path, halves: set[str], threads: int):
    """Every pair of the labelled set in the halves asked for."""
    bundled_ct, bundled_mr = read(resources.sample_ct_path()), read(resources.sample_mr_path())
    bundled_reference = matrix_from_sitk(sitk.ReadTransform(str(resources.sample_reference_transform_path())))
    porcine = shared / "mridir-porcine"
    full_reference = matrix_from_sitk(sitk.ReadTransform(str(porcine / "reference_rigid_fixedCT_movingMR.tfm")))
    choice_crops = ("MR 40 % of its slices", "both partial")
    if CHOICE in halves:
        yield Pair("phantom 2 mm", CHOICE, bundled_ct, bundled_mr, bundled_reference)
    full = None
    for name, (ct_box, mr_box) in PHANTOM_CROPS.items():
        half = CHOICE if name in choice_crops else HELD_OUT
        if half in halves:
            full = full or (read(porcine / "ct_fullres.nii.gz"), read(porcine / "mr_t2_fullres.nii.gz"))
            yield Pair(f"phantom {name}", half, crop(full[0], ct_box), crop(full[1], mr_box), full_reference)
    if HELD_OUT in halves:
        full = full or (read(porcine / "ct_fullres.nii.gz"), read(porcine / "mr_t2_fullres.nii.gz"))
        yield Pair("phantom full resolution", HELD_OUT, *full, full_reference)
    for patient, half in (("STS_002", CHOICE), ("STS_003", HELD_OUT)):
        if half not in halves:
            continue
        folder = shared / "sts-thigh" / patient
        ct, mr = (read(folder / part / "nifti" / "image" / "image.nii.gz") for part in ("CT", "MR_T1"))
        for name, (ct_box, mr_box) in THIGH_CROPS.items():
            yield Pair(f"{patient} {name}", half, crop(ct, ct_box), crop(mr, mr_box), np.eye(4))
    unwarped_base = None
    for seed, half in ((1, CHOICE), (2, HELD_OUT)):
        if half not in halves:
            continue
        unwarped_base = unwarped_base if unwarped_base is not None else register(bundled_ct, bundled_mr,
                                                                                  bundled_reference, threads)
        warp = synthetic_warp(bundled_mr, "MR", seed)
        yield Pair(f"warp seed {seed}", half, bundled_ct, warp.deformed, bundled_reference, warp, unwarped_base)


def register(ct: sitk.Image, mr: sitk.Image, start: np.ndarray | None, threads: int) -> np.ndarray:
    options = RegistrationOptions(threads=threads, initial_matrix=start)
    return np.asarray(register_images(ct, mr, options).matrix)


class Truth:
    """The true error (mm) of a CT->MR matrix of a pair: p95 both ways over the shared points, from the base
    (through the known warp for a synthetic warp)."""

    def __init__(self, pair: Pair, base: np.ndarray, ct_qa: sitk.Image, mr_qa: sitk.Image):
        images = prepare_qa_images(ct_qa, mr_qa, "CT", "MR")
        self.points: SharedPoints = shared_points(images, base)
        self.pair, self.base = pair, base
        if pair.warp is not None:  # the warped MR's points in the unwarped MR's space, once
            self.moving_unwarped = pair.warp.map_back(self.points.moving)

    def error(self, matrix: np.ndarray) -> float:
        if self.pair.warp is None:
            return p95(distances_both_ways(matrix, self.base, self.points))
        original = self.pair.unwarped_base
        forward = np.linalg.norm(self.pair.warp.map_back(transform_points(matrix, self.points.fixed))
                                 - transform_points(original, self.points.fixed), axis=1)
        backward = np.linalg.norm(transform_points(np.linalg.inv(matrix), self.points.moving)
                                  - transform_points(np.linalg.inv(original), self.moving_unwarped), axis=1)
        return p95(np.concatenate([forward, backward]))

    @property
    def centre(self) -> np.ndarray:
        return np.concatenate([self.points.fixed, transform_points(np.linalg.inv(self.base), self.points.moving)]
                              ).mean(axis=0)


def motion(rotation: np.ndarray, translation: np.ndarray, centre: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + translation
    return matrix


def degraded(base: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """The base after moving the fixed space by known translations and rotations (random directions)."""
    cases = []
    for millimetres in TRANSLATIONS_MM:
        direction = rng.normal(size=3)
        cases.append((f"shift {millimetres:g} mm",
                      base @ motion(np.eye(3), direction / np.linalg.norm(direction) * millimetres, centre)))
    for degrees in ROTATIONS_DEGREES:
        axis = rng.normal(size=3)
        rotation = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(degrees)).as_matrix()
        cases.append((f"turn {degrees:g} deg", base @ motion(rotation, np.zeros(3), centre)))
    return cases


def assess_both_ways(ct_qa: sitk.Image, mr_qa: sitk.Image, matrix: np.ndarray, options: QAOptions) -> dict:
    """The verdict, bound, cues and seconds of the CT-fixed and the MR-fixed assessment of one result."""
    runs = {}
    for direction, (fixed, moving, transform) in zip(DIRECTIONS, ((ct_qa, mr_qa, matrix),
                                                                  (mr_qa, ct_qa, np.linalg.inv(matrix)))):
        result = assess(fixed, moving, transform, options=options)
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) or v is None}
        runs[direction] = {"verdict": result.verdict, "reasons": result.reasons, "seconds": round(result.seconds, 2),
                           "metrics": metrics}
    return runs


def run_pairs(args) -> list[dict]:
    options = QAOptions(restarts=args.restarts, threads=args.threads)
    cases, log = [], open(args.json, "w") if args.json else None
    for index, pair in enumerate(pairs(shared_data(), set(args.halves.split(",")), args.threads)):
        if args.only and not any(part in pair.name for part in args.only.split(",")):
            continue
        started = time.perf_counter()
        base = register(pair.ct, pair.mr, pair.reference, args.threads)
        ct_qa, mr_qa = qa_grid(pair.ct), qa_grid(pair.mr)  # as assess makes them: once per pair
        truth = Truth(pair, base, ct_qa, mr_qa)
        rng = np.random.default_rng(args.seed + index)
        results = [("base", base, mr_qa), ("external reference", pair.reference, mr_qa)]
        results += [(label, matrix, mr_qa) for label, matrix in degraded(base, truth.centre, rng)]
        mr_centre = np.asarray(pair.mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in pair.mr.GetSize()]))
        for pose in random_poses(args.poses, args.seed + index, mr_centre):
            found = register(pair.ct, move_header(pair.mr, pose), None, args.threads)
            results.append(("registered from a random pose", np.linalg.inv(pose) @ found, move_header(mr_qa, pose),
                            pose))
        print(f"\n{pair.name} ({pair.half}): base vs external reference {truth.error(pair.reference):.1f} mm "
              f"({time.perf_counter() - started:.0f} s with the registrations)", flush=True)
        for label, matrix, mr_image, *pose in results:
            # a posed result is assessed on the posed images: the same case in the MR's moved frame
            assessed = pose[0] @ matrix if pose else matrix
            case = {"pair": pair.name, "half": pair.half, "case": label, "true_error_mm": truth.error(matrix),
                    "directions": assess_both_ways(ct_qa, mr_image, assessed, options)}
            cases.append(case)
            if log:  # the reasons follow from the cues (--from grades them again)
                stored = case | {"directions": {d: {k: v for k, v in run.items() if k != "reasons"}
                                                for d, run in case["directions"].items()}}
                log.write(json.dumps(stored, default=float) + "\n")
                log.flush()
            print(case_line(case), flush=True)
    return cases


def regraded(case: dict) -> dict:
    """The case with each direction's verdict and bound from its stored cues and the current limits."""
    for run in case["directions"].values():
        metrics = {k: v for k, v in run["metrics"].items() if k != "error_bound_mm"}
        verdict = grade_cues(metrics)
        run["verdict"], run["reasons"] = verdict.verdict, verdict.reasons
        run["metrics"]["error_bound_mm"] = error_bound_mm(metrics)
    return case


def case_line(case: dict) -> str:
    cells = []
    for direction, run in case["directions"].items():
        bound = run["metrics"].get("error_bound_mm")
        cells.append(f"{direction}: {run['verdict']:<6} bound {'-' if bound is None else f'{bound:5.1f}'} "
                     f"({run['seconds']:4.1f} s)")
    return f"  {case['case']:<30} {case['true_error_mm']:7.2f} mm | " + " | ".join(cells)


def band(error: float) -> str:
    """The truth band of a p95 error, to 0.01 mm (a 10 mm shift is within 10 mm, not beyond)."""
    error = round(error, 2)
    return next(name for name, low, high in BANDS if low < error <= high or (low == 0.0 and error <= high))


def confusion(cases: list[dict], direction: str) -> str:
    lines = [f"{'true error':<14}" + "".join(f"{v:>8}" for v in VERDICTS)]
    for name, _, _ in BANDS:
        rows = [case for case in cases if band(case["true_error_mm"]) == name]
        counts = [sum(case["directions"][direction]["verdict"] == v for case in rows) for v in VERDICTS]
        lines.append(f"{name + f' ({len(rows)})':<14}" + "".join(f"{c:8d}" for c in counts))
    return "\n".join(lines)


def rate(hits: int, total: int) -> str:
    return f"{hits}/{total} = {hits / total:.1%}" if total else "0/0"


def rates(cases: list[dict], direction: str) -> list[str]:
    verdicts = [(case["true_error_mm"], case["directions"][direction]["verdict"]) for case in cases]
    right = [v for e, v in verdicts if band(e) == "<= 2 mm"]
    gross = [v for e, v in verdicts if band(e) == "> 10 mm"]
    middle = [v for e, v in verdicts if band(e) in ("3-5 mm", "5-10 mm")]
    return [f"false alarms (within 2 mm, read failed): {rate(right.count('failed'), len(right))}",
            f"silent (beyond 10 mm, read ok or check): {rate(len(gross) - gross.count('failed'), len(gross))}",
            f"3-10 mm read check or failed: {rate(len(middle) - middle.count('ok'), len(middle))}"]


def bound_lines(cases: list[dict], direction: str) -> list[str]:
    pairs_ = [(case["true_error_mm"], case["directions"][direction]["metrics"].get("error_bound_mm"))
              for case in cases]
    pairs_ = [(e, b) for e, b in pairs_ if b is not None]
    if not pairs_:
        return ["error bound: none computed"]
    errors, bounds = np.array(pairs_).T
    covered = int(np.sum(errors <= bounds))
    ratio = bounds / np.maximum(errors, 1e-9)
    near = errors <= 10.0
    by_band = []
    for name, _, _ in BANDS:
        inside = np.array([band(e) == name for e in errors])
        if inside.any():
            by_band.append(f"{name} {int(np.sum(errors[inside] <= bounds[inside]))}/{int(inside.sum())} "
                           f"(median ratio {np.median(ratio[inside]):.1f})")
    return [f"error bound covers the true error: {rate(covered, len(errors))}; median bound / true error "
            f"{np.median(ratio):.2f} (over errors above 0.05 mm: {np.median(ratio[errors > 0.05]):.2f}); median "
            f"bound {np.median(bounds):.1f} mm; within 10 mm: covers "
            f"{rate(int(np.sum(errors[near] <= bounds[near])), int(near.sum()))}, median ratio "
            f"{np.median(ratio[near]):.2f}",
            "  per band: " + "; ".join(by_band)]


def symmetry_lines(cases: list[dict]) -> list[str]:
    differ = [case for case in cases
              if len({run["verdict"] for run in case["directions"].values()}) > 1]
    lines = [f"verdicts that differ between the directions: {len(differ)}/{len(cases)}"]
    lines += [f"  {case['pair']} / {case['case']}: " + ", ".join(
        f"{d} {r['verdict']}" for d, r in case["directions"].items()) for case in differ]
    cues = [limit.cue for limit in LIMITS] + ["edge_best_shift_mm", "restart_offset_mm", "error_bound_mm"]
    worst = {}
    for case in cases:
        ct_run, mr_run = (case["directions"][d]["metrics"] for d in DIRECTIONS)
        for cue in cues:
            a, b = ct_run.get(cue), mr_run.get(cue)
            if a is not None and b is not None:
                worst[cue] = max(worst.get(cue, 0.0), abs(a - b))
    lines.append("largest difference of a cue between the directions: "
                 + ", ".join(f"{cue} {value:.3g}" for cue, value in worst.items()))
    return lines


def cue_table(cases: list[dict]) -> str:
    """Each cue's median and extreme per truth band (both directions pooled)."""
    cues = [limit.cue for limit in LIMITS if limit.cue not in ("restarts_without_overlap", "folding_percent",
                                                               "inverse_consistency_p95_mm")]
    cues += ["edge_best_shift_mm"]
    lines = [f"{'cue':<24}" + "".join(f"{name:>22}" for name, _, _ in BANDS)]
    for cue in cues:
        cells = []
        for name, _, _ in BANDS:
            values = np.array([run["metrics"][cue] for case in cases if band(case["true_error_mm"]) == name
                               for run in case["directions"].values() if run["metrics"].get(cue) is not None])
            cells.append(f"{np.median(values):9.3f} [{values.min():5.2f},{values.max():5.2f}]" if values.size
                         else f"{'-':>22}")
        lines.append(f"{cue:<24}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def summary(cases: list[dict]) -> None:
    for half in (CHOICE, HELD_OUT):
        chosen = [case for case in cases if case["half"] == half]
        if not chosen:
            continue
        pair_names = sorted({case["pair"] for case in chosen})
        print(f"\n=== {half} half: {len(chosen)} results of {len(pair_names)} pairs ({', '.join(pair_names)})")
        for direction in DIRECTIONS:
            print(f"\n{direction}\n{confusion(chosen, direction)}")
            for line in rates(chosen, direction) + bound_lines(chosen, direction):
                print(line)
        print()
        for line in symmetry_lines(chosen):
            print(line)
        print(f"\ncues per truth band, median [min, max], both directions\n{cue_table(chosen)}")
    seconds = [run["seconds"] for case in cases for run in case["directions"].values()]
    print(f"\nmedian QA time {np.median(seconds):.1f} s, p95 {p95(seconds):.1f} s, over {len(seconds)} assessments")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--restarts", type=int, default=QAOptions.restarts)
    parser.add_argument("--poses", type=int, default=1, help="registrations from random poses per pair")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--halves", default=f"{CHOICE},{HELD_OUT}")
    parser.add_argument("--only", help="pairs whose name contains one of these (comma-separated) words")
    parser.add_argument("--json", type=Path, help="write every case here (one JSON object a line)")
    parser.add_argument("--from", dest="stored", type=Path, nargs="+",
                        help="re-grade stored cases (JSON lines) with the current limits instead of running")
    args = parser.parse_args()
    if args.stored:
        cases = [regraded(json.loads(line)) for path in args.stored for line in path.read_text().splitlines()
                 if line.strip()]
        for case in cases:
            print(f"{case['pair']:<28}" + case_line(case))
    else:
        cases = run_pairs(args)
    summary(cases)


if __name__ == "__main__":
    main()
