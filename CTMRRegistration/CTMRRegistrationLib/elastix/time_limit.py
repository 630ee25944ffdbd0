"""A wall-clock limit for one elastix run, from the work its parameter maps ask for.

Elastix's cost grows with iterations x samples per resolution (times the points a B-spline sample
touches) plus a pass over the voxels per resolution. The limit allows about ten times what the bundled
stages take on one slow core, so it only stops runs that would otherwise not end."""

from __future__ import annotations

import numpy as np

from .job import ElastixJob
from .parameters import ParameterMap

BASE_SECONDS = 120.0
SECONDS_PER_SAMPLE_ITERATION = 2e-5
SECONDS_PER_VOXEL_PASS = 1e-5
BSPLINE_FACTOR = 8.0
DEFAULT_ITERATIONS, DEFAULT_SAMPLES = 500, 5000


def _per_level(parameters: ParameterMap, key: str, default: int, levels: int) -> list[int]:
    values = [int(float(v)) for v in parameters.get(key, [str(default)])] or [default]
    return [values[min(level, len(values) - 1)] for level in range(levels)]


def time_limit_seconds(job: ElastixJob) -> float:
    """Seconds after which an elastix run of `job` is stopped."""
    voxels = float(np.prod(job.fixed.GetSize())) + float(np.prod(job.moving.GetSize()))
    seconds = BASE_SECONDS
    for parameters in job.parameter_maps:
        levels = int(parameters.get("NumberOfResolutions", ["1"])[0])
        iterations = _per_level(parameters, "MaximumNumberOfIterations", DEFAULT_ITERATIONS, levels)
        full = parameters.get("ImageSampler", [""])[0] in ("Full", "Grid")
        samples = [voxels] * levels if full else _per_level(parameters, "NumberOfSpatialSamples", DEFAULT_SAMPLES,
                                                            levels)
        factor = BSPLINE_FACTOR if "BSpline" in parameters.get("Transform", [""])[0] else 1.0
        seconds += SECONDS_PER_SAMPLE_ITERATION * factor * sum(i * s for i, s in zip(iterations, samples))
        seconds += SECONDS_PER_VOXEL_PASS * voxels * levels
    return seconds
