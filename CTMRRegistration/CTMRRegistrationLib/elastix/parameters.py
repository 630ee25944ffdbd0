"""Elastix parameter files: read them into maps, write maps back, and what one registration needs (ElastixJob).
One format for every backend."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from ..core.errors import InputError
from ..core.input_files import read_text

ParameterMap = dict[str, list[str]]


@dataclass
class ElastixJob:
    """Register `moving` to `fixed` with `parameter_maps` in turn, from an optional initial transform."""

    fixed: sitk.Image
    moving: sitk.Image
    parameter_maps: list[ParameterMap]
    initial_transform_map: ParameterMap | None = None
    fixed_mask: sitk.Image | None = None
    moving_mask: sitk.Image | None = None
    threads: int | None = None

_ENTRY = re.compile(r"^\s*\((\w+)((?:\s+(?:\"[^\"]*\"|[^\s\")]+))*)\s*\)")
_VALUE = re.compile(r"\"([^\"]*)\"|([^\s\"]+)")


def read_parameter_file(path, required: tuple[str, ...] = ("Transform", "Metric")) -> ParameterMap:
    """Parse `(Key value ...)` lines; `//` comments and blank lines are skipped.

    `required` keys must be present: a registration parameter file by default; pass ("Transform",)
    for a TransformParameters file written by elastix."""
    path = Path(path)
    text = read_text(path, "elastix parameter")
    parameters: ParameterMap = {}
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("//", 1)[0].strip()
        if not content:
            continue
        match = _ENTRY.match(content)
        if match is None:
            raise InputError(f"{path.name}, line {number}: not an elastix parameter: {content}")
        parameters[match.group(1)] = [quoted or bare for quoted, bare in _VALUE.findall(match.group(2))]
    missing = [key for key in required if key not in parameters]
    if missing:
        raise InputError(f"{path.name} is not an elastix parameter file (no {' or '.join(missing)})")
    return parameters


def _format_value(value: str) -> str:
    try:
        float(value)
        return value
    except ValueError:
        return f'"{value}"'


def format_parameter_map(parameters: ParameterMap) -> str:
    return "".join(
        f"({key} {' '.join(_format_value(str(v)) for v in values)})\n" for key, values in parameters.items()
    )


def write_parameter_file(parameters: ParameterMap, path) -> Path:
    path = Path(path)
    path.write_text(format_parameter_map(parameters))
    return path
