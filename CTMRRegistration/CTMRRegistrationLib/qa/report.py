"""A self-contained HTML report of a registration's quality: verdict and reasons, metrics, pictures
(embedded as base64 PNG), inputs and parameters, software versions and timings. One file that can be
attached to a thesis or a case file; the PNGs are also left beside it."""

from __future__ import annotations

import base64
import datetime
import html
import platform
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.resources import VERSION
from .assess import QAResult
from .pictures import KINDS, write_qa_pictures
from .verdict import bound_text

REPORT_NAME = "report.html"
REPORT_ROWS = ("before", "after")
VERDICT_COLOURS = {"ok": "#1b7f3b", "check": "#b7791f", "failed": "#b42318"}
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
.verdict{display:inline-block;color:#fff;padding:4px 14px;border-radius:4px;font-weight:bold}
img{max-width:100%;margin:4px 0}figure{margin:0 0 1em 0}figcaption{font-size:.85em;color:#555}"""


def versions(elastix: str) -> dict[str, str]:
    """Versions of this package and of what computed the results (`elastix`: the backend that ran)."""
    return {"CTMRRegistration": VERSION, "SimpleITK": sitk.Version_VersionString(), "elastix": elastix,
            "numpy": np.__version__, "Python": platform.python_version(), "platform": platform.platform()}


def _flatten(values: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name} / ")
        else:
            rows.append((name, value))
    return rows


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 12:
        return html.escape(f"{list(value[:12])} ... ({len(value)} values)")
    return html.escape(str(value))


def _table(values: dict) -> str:
    if not values:
        return "<p>none</p>"
    rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{_cell(value)}</td></tr>" for name, value in _flatten(values))
    return f"<table>{rows}</table>"


def _figures(pictures: dict[str, Path]) -> str:
    parts = []
    for name, path in pictures.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        caption = html.escape(name.replace("_", " ") + " (axial, coronal, sagittal through the object's centre)")
        parts.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{caption}</figcaption></figure>")
    return "".join(parts)


def _bound(qa: QAResult) -> str:
    return html.escape(bound_text(qa.metrics.get("error_bound_mm")))


def write_report(directory, qa: QAResult, pictures: dict[str, Path] | None = None, inputs: dict | None = None,
                 parameters: dict | None = None, registration: dict | None = None,
                 title: str = "CT-MR registration quality report") -> Path:
    """Write `directory`/report.html; `registration` is the registration's own JSON form when there is one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    elastix = (registration or {}).get("backend") or qa.backend or "not run"
    colour = VERDICT_COLOURS.get(qa.verdict, "#444")
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in qa.reasons) or "<li>no cue in doubt</li>"
    timings = {"quality assessment": round(qa.seconds, 3)}
    timings |= {f"qa / {k}": v for k, v in qa.as_dict()["stage_seconds"].items()}
    if registration:
        timings |= {"registration": registration.get("seconds")}
        timings |= {f"registration / {k}": v for k, v in registration.get("stage_seconds", {}).items()}
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Verdict: <span class=verdict style='background:{colour}'>{html.escape(qa.verdict)}</span>{_bound(qa)}</p>",
        f"<ul>{reasons}</ul>",
        "<h2>Metrics</h2>", _table(qa.metrics),
        "<h2>Pictures</h2>", _figures(pictures or {}),
        "<h2>Inputs</h2>", _table(inputs or {}),
        "<h2>Parameters</h2>", _table(parameters or {}),
    ]
    if registration:
        sections += ["<h2>Registration</h2>", _table({k: v for k, v in registration.items() if k != "stage_seconds"})]
    sections += ["<h2>Timings (s)</h2>", _table(timings), "<h2>Versions</h2>", _table(versions(elastix)),
                 f"<p><small>Written {datetime.datetime.now().isoformat(timespec='seconds')}. Transforms map fixed "
                 "physical points to moving ones (LPS, ITK resampling convention).</small></p>"]
    path = directory / REPORT_NAME
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>", encoding="utf-8")
    return path


def write_qa_report(directory, fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, qa: QAResult,
                    before: sitk.Transform | None = None, inputs: dict | None = None, parameters: dict | None = None,
                    registration: dict | None = None) -> Path:
    """Pictures before (`before`, default the headers as they are) and after `transform`, then the report."""
    rows = dict(zip(REPORT_ROWS, (before or sitk.Transform(), transform)))
    pictures = write_qa_pictures(directory, fixed, moving, rows, np.asarray(qa.metrics["object_centre_lps"]))
    ordered = {f"{row}_{kind}": pictures[f"{row}_{kind}"] for kind in KINDS for row in rows}
    return write_report(directory, qa, ordered, inputs, parameters, registration)


def report_file_names() -> list[str]:
    """The files a report folder receives: the report and its pictures."""
    return [REPORT_NAME] + [f"{row}_{kind}.png" for row in REPORT_ROWS for kind in KINDS]
