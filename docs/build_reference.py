"""Writes docs/reference.md from the code: the command lines' argparse help, the option names of the panel,
the Python API and the command line side by side, the JSON fields, and the public Python names with their
signatures and docstrings. `make docs` runs it; a test checks that the file is current.

    python docs/build_reference.py [OUTPUT]
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sys
import typing
from pathlib import Path

import CTMRRegistrationLib
from CTMRRegistrationLib.apps import qa_cli, register_cli
from CTMRRegistrationLib.apps.panel import PanelSettings
from CTMRRegistrationLib.batch import cli as batch_cli
from CTMRRegistrationLib.mrml.scene_registration import DEPRECATED_KEYWORDS

REFERENCE = Path(__file__).resolve().parent / "reference.md"
STAGE_BOXES = ("rigidStage", "affineStage", "deformableStage")
PANEL_ONLY = {"metricsTable": "the metrics table node the panel fills", "verdict": "the verdict the panel shows",
              "outputDicomReg": "the file *Export DICOM REG* writes (`--output-dicom-reg` on the command line)"}
JSON_FIELDS = {
    "status": "`ok`, `mirrored` (not registered: the moving image looks mirrored), `error` or `interrupted`",
    "verdict": "the quality verdict: `ok`, `check` or `failed` (null with `--no-qa`)",
    "transform": "the 4x4 fixed->moving matrix (LPS) of the result's linear part",
    "transform_convention": "how to read `transform`",
    "deformable": "whether the result has a deformable part (the transform file is then a composite)",
    "backend": "the elastix that ran, with its version",
    "seconds": "the registration's wall time",
    "stage_seconds": "the time of each step: reading, masks, initialization, bias correction, crop, each elastix "
                     "stage, each step of the quality check (`qa_*`), writing",
    "fixed_modality": "`CT` or `MR`, from the DICOM tag, the intensities or `--fixed-modality`",
    "moving_modality": "the same for the moving image",
    "metrics": "what the registration measured: the start pose search, overlap, each stage's guard",
    "warnings": "sentences a user should read",
    "qa": "the quality assessment: `verdict`, `reasons`, `metrics`, `seconds`, `stage_seconds`",
    "outputs": "each file written, by kind",
}
PUBLIC_MODULES = {"resources": "CTMRRegistrationLib.core.resources", "mrml_io": "CTMRRegistrationLib.mrml.node_io"}


def snake_case(name: str) -> str:
    return re.sub(r"([A-Z])", lambda match: "_" + match.group(1).lower(), name)


def option_strings(parser) -> set[str]:
    return {option for action in parser._actions if action.help != "==SUPPRESS==" for option in action.option_strings}


def vocabulary_rows() -> list[tuple[str, str, str]]:
    """(parameter node field, register keyword, ctmr-register option) for every option any of them has."""
    options = option_strings(register_cli.build_parser())
    keywords = [name for name, parameter in inspect.signature(CTMRRegistrationLib.RegistrationLogic.register)
                .parameters.items() if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
    rows, covered = [], set()
    for field in dataclasses.fields(PanelSettings):
        name = field.name
        if name in PANEL_ONLY or name in STAGE_BOXES[1:]:
            continue
        keyword = {"fixedVolume": "fixed_node", "movingVolume": "moving_node", "preset": "presets",
                   "rigidStage": "stages"}.get(name, snake_case(name))
        flag = {"fixed_node": "--fixed", "moving_node": "--moving", "presets": "--preset"}.get(
            keyword, "--" + keyword.replace("_", "-"))
        panel = ", ".join(f"`{box}`" for box in STAGE_BOXES) if name == "rigidStage" else f"`{name}`"
        rows.append((panel, f"`{keyword}`", f"`{flag}`" if flag in options else "(scene only)"))
        covered.add(keyword)
    for keyword in keywords:
        flag = "--" + keyword.replace("_", "-")
        if keyword not in covered:
            rows.append(("", f"`{keyword}`", f"`{flag}`" if flag in options else "(Python only)"))
    return rows


def help_text(parser) -> str:
    return parser.format_help().rstrip()


def annotation_text(annotation) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    return text.replace("|", "\\|")


def fields_table(cls) -> list[str]:
    hints = typing.get_type_hints(cls) if not any(isinstance(f.type, str) and "vtk" in f.type
                                                    for f in dataclasses.fields(cls)) else {}
    lines = ["| field | type | default |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            default = f"`{field.default!r}`"
        elif field.default_factory is not dataclasses.MISSING:
            default = f"`{field.default_factory()!r}`"
        else:
            default = "(required)"
        kind = annotation_text(hints.get(field.name, field.type))
        lines.append(f"| `{field.name}` | `{kind}` | {default} |")
    return lines


def python_section(name: str) -> list[str]:
    value = getattr(CTMRRegistrationLib, name)
    if name in PUBLIC_MODULES:
        module = sys.modules[PUBLIC_MODULES[name]]
        lines = [f"### `{name}` (module)", "", inspect.getdoc(module) or "", ""]
        for function_name, function in inspect.getmembers(module, inspect.isfunction):
            if not function_name.startswith("_") and function.__module__ == module.__name__:
                summary = (inspect.getdoc(function) or "").partition("\n")[0]
                lines += [f"- `{name}.{function_name}{inspect.signature(function)}`: {summary}"]
        return lines + [""]
    if inspect.isclass(value):
        lines = [f"### `{name}`", "", inspect.getdoc(value) or "", ""]
        if dataclasses.is_dataclass(value):
            lines += fields_table(value) + [""]
        for method_name, method in inspect.getmembers(value, inspect.isfunction):
            if method_name.startswith("_") or method.__qualname__.split(".")[0] != value.__name__:
                continue
            lines += [f"#### `{name}.{method_name}`", "", "```python",
                      f"{method_name}{inspect.signature(method)}", "```", "", inspect.getdoc(method) or "", ""]
        return lines
    if callable(value):
        return [f"### `{name}`", "", "```python", f"{name}{inspect.signature(value)}", "```", "",
                inspect.getdoc(value) or "", ""]
    return [f"### `{name}`", "", f"`{value!r}`", ""]


def reference() -> str:
    os.environ["COLUMNS"] = "110"  # argparse wraps its help to the terminal: a fixed width keeps the file stable
    lines = ["# Reference", "",
             "Generated from the code by `python docs/build_reference.py` (`make docs`); a test checks that it is "
             "current. The [user's guide](guide.md) explains how the pieces fit together.", "",
             "## One name per option", "",
             "The panel's parameter-node fields, `RegistrationLogic.register`'s keywords and `ctmr-register`'s options "
             "name each option alike (camelCase, snake_case, kebab-case).", "",
             "| parameter node | `register` keyword | `ctmr-register` option |", "|---|---|---|"]
    lines += [f"| {panel} | {keyword} | {flag} |" for panel, keyword, flag in vocabulary_rows()]
    lines += ["", "Panel-only fields: " + "; ".join(f"`{name}`: {what}" for name, what in PANEL_ONLY.items()) + ".",
              "", "Old names still work with a deprecation warning:", ""]
    lines += [f"- `register(..., {old}=...)`: use `{new}`" for old, new in DEPRECATED_KEYWORDS.items()]
    lines += ["- `ctmr-register --init`, `--no-masks`, `--output-crop-roi`, `--elastix`, `--report`, `--fixed-seg`, "
              "`--moving-seg`: use `--initialization`, `--no-use-masks`, `--registered-region`, "
              "`--elastix-executable`, `--report-folder`, `--fixed-segmentation`, `--moving-segmentation`", ""]
    for parser in (register_cli.build_parser(), qa_cli.build_parser(), batch_cli.build_parser()):
        lines += [f"## `{parser.prog}`", "", "```text", help_text(parser), "```", ""]
    lines += ["## JSON output", "", "`ctmr-register --json` prints one object (`result.json` in the demo):", "",
              "| field | what |", "|---|---|"]
    lines += [f"| `{field}` | {what} |" for field, what in JSON_FIELDS.items()]
    lines += ["", "## Python API", "", "Everything below is importable from `CTMRRegistrationLib`.", ""]
    for name in sorted(CTMRRegistrationLib.__all__, key=str.lower):
        if name != "__version__":
            lines += python_section(name)
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REFERENCE
    target.write_text(reference())
    print(f"wrote {target}")
