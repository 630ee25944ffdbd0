"""Fraction done of an elastix run, read from the lines it prints (parameter file, resolution, iteration)."""

from __future__ import annotations

import re

from .parameters import ParameterMap

_PARAMETER_FILE = re.compile(r"^Running elastix with parameter file (\d+):")
_RESOLUTION = re.compile(r"^Resolution: (\d+)")
_ITERATION = re.compile(r"^(\d+)\t")


def _iterations_per_resolution(parameters: ParameterMap) -> list[int]:
    resolutions = int(parameters.get("NumberOfResolutions", ["1"])[0])
    counts = [int(v) for v in parameters.get("MaximumNumberOfIterations", ["500"])]
    return [max(counts[min(level, len(counts) - 1)], 1) for level in range(resolutions)]


class ElastixProgress:
    """Turns elastix output lines into a monotone fraction in [0, 1].

    Every parameter map gets an equal share, every resolution an equal share of its map, and iterations
    fill the resolution up to its MaximumNumberOfIterations.
    """

    def __init__(self, parameter_maps: list[ParameterMap]):
        self.iterations = [_iterations_per_resolution(p) for p in parameter_maps]
        self.map = self.level = 0
        self.fraction = 0.0

    def update(self, line: str) -> float | None:
        """The new fraction when `line` moves it forward, else None."""
        started = _PARAMETER_FILE.match(line)
        level = _RESOLUTION.match(line)
        iteration = _ITERATION.match(line)
        if started:
            self.map, self.level = min(int(started.group(1)), len(self.iterations) - 1), 0
        elif level:
            self.level = min(int(level.group(1)), len(self.iterations[self.map]) - 1)
        elif not iteration:
            return None
        levels = self.iterations[self.map]
        done = min((int(iteration.group(1)) + 1) / levels[self.level], 1.0) if iteration else 0.0
        fraction = (self.map + (self.level + done) / len(levels)) / len(self.iterations)
        if fraction <= self.fraction:
            return None
        self.fraction = fraction
        return fraction
