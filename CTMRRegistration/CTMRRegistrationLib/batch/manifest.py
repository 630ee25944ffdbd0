"""The cohort manifest of `ctmr-batch`: a CSV with one registration per row, checked before any work starts,
and the fingerprints that tell whether a case must be computed again.

    case,fixed,moving[,fixed_landmarks,moving_landmarks,fixed_targets,moving_targets,fixed_seg,moving_seg,
                      fixed_mask,moving_mask,stages]

Paths are relative to the CSV's folder (absolute ones are kept); an empty optional cell means "not given".
A path that exists must be a regular file (fixed and moving: or a DICOM folder); one that does not exist is the
case's own error, recorded when it runs. A case id cannot be the name of a file ctmr-batch writes in the
output folder. Every error names the line of the file it was found on.

A case's fingerprint hashes the library version, the `ctmr-register` options of the case (output paths
excluded: they are the same on every run) and the content of every input file or DICOM folder, so a rerun
recomputes a case exactly when something that could change its result has changed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError
from ..core.resources import VERSION
from .summary import WRITTEN_NAMES

REQUIRED_COLUMNS = ("case", "fixed", "moving")
PATH_COLUMNS = ("fixed", "moving", "fixed_landmarks", "moving_landmarks", "fixed_targets", "moving_targets",
                "fixed_segmentation", "moving_segmentation", "fixed_seg", "moving_seg", "fixed_mask", "moving_mask")
VALUE_COLUMNS = ("stages",)
FOLDER_COLUMNS = ("fixed", "moving")  # a DICOM series may be a folder
RESERVED_NAMES = WRITTEN_NAMES  # what ctmr-batch writes in the output folder beside the cases
CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
OPTION_OF_COLUMN = {"fixed_seg": "--fixed-segmentation", "moving_seg": "--moving-segmentation"}  # older names
CHUNK = 1 << 20


def option_name(column: str) -> str:
    """The `ctmr-register` option a manifest column maps to: fixed_landmarks -> --fixed-landmarks (fixed_seg, an
    older column name, -> --fixed-segmentation)."""
    return OPTION_OF_COLUMN.get(column, "--" + column.replace("_", "-"))


@dataclass(frozen=True)
class Case:
    """One row of the manifest: its id, the line it came from, its input paths and its option values."""

    case: str
    line: int
    paths: dict[str, Path] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)

    def register_arguments(self) -> list[str]:
        """The `ctmr-register` options this row asks for, in column order."""
        return ["--fixed", str(self.paths["fixed"]), "--moving", str(self.paths["moving"]), *self.optional_arguments()]

    def optional_arguments(self) -> list[str]:
        """The options of the optional columns filled in on this row."""
        arguments = []
        for column in PATH_COLUMNS[2:]:
            if column in self.paths:
                arguments += [option_name(column), str(self.paths[column])]
        for column in VALUE_COLUMNS:
            if column in self.values:
                arguments += [option_name(column), self.values[column]]
        return arguments


def read_manifest(path: Path) -> list[Case]:
    """The cases of manifest `path`; InputError naming the line for any malformed content."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise InputError(f"manifest {path} not found")
    if not path.is_file():
        raise InputError(f"manifest {path} is not a regular file ({_kind(path)})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read manifest {path}: {error}") from error
    rows = [(number, row) for number, row in enumerate(csv.reader(text.splitlines()), start=1)
            if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"{path.name}: the manifest is empty (expected a header line case,fixed,moving)")
    header_line, header = rows[0]
    columns = _check_header(path.name, header_line, [cell.strip() for cell in header])
    cases, first_line = [], {}
    for number, row in rows[1:]:
        case = _read_row(path, number, columns, row)
        if case.case in first_line:
            raise InputError(f"{path.name} line {number}: duplicate case id {case.case!r} "
                             f"(first on line {first_line[case.case]})")
        first_line[case.case] = number
        cases.append(case)
    if not cases:
        raise InputError(f"{path.name}: the manifest has a header but no cases")
    return cases


def _check_header(name: str, line: int, columns: list[str]) -> list[str]:
    known = set(REQUIRED_COLUMNS + PATH_COLUMNS + VALUE_COLUMNS)
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise InputError(f"{name} line {line}: missing column(s) {', '.join(missing)} in the header")
    unknown = [column for column in columns if column not in known]
    if unknown:
        raise InputError(f"{name} line {line}: unknown column(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    options = [option_name(column) for column in columns]  # fixed_seg and fixed_segmentation are one option
    repeated = sorted({column for column, option in zip(columns, options) if options.count(option) > 1})
    if repeated:
        raise InputError(f"{name} line {line}: column(s) {', '.join(repeated)} appear twice in the header")
    return columns


def _read_row(path: Path, number: int, columns: list[str], row: list[str]) -> Case:
    where = f"{path.name} line {number}"
    if len(row) != len(columns):
        raise InputError(f"{where}: {len(row)} fields, the header has {len(columns)}")
    cells = {column: cell.strip() for column, cell in zip(columns, row)}
    case = cells["case"]
    if not CASE_ID.fullmatch(case):
        raise InputError(f"{where}: case id {case!r} must start with a letter or digit and hold only "
                         "letters, digits, '.', '_' and '-' (it names the case's output folder)")
    reserved = [name for name in RESERVED_NAMES if name.casefold() == case.casefold()]
    if reserved:
        raise InputError(f"{where}: case id {case!r} is the name of the file {reserved[0]} that ctmr-batch writes "
                         "in the output folder; rename the case")
    for column in REQUIRED_COLUMNS[1:]:
        if not cells[column]:
            raise InputError(f"{where}: case {case!r} has no {column} image")
    paths = {column: _input_path(where, column, path.parent / cells[column])
             for column in PATH_COLUMNS if cells.get(column)}
    values = {column: cells[column] for column in VALUE_COLUMNS if cells.get(column)}
    return Case(case=case, line=number, paths=paths, values=values)


def _input_path(where: str, column: str, path: Path) -> Path:
    """`path` made absolute; InputError for a symbolic-link loop or something that is no regular file (fixed,
    moving: nor a folder). A missing path is kept: the case records that error when it runs."""
    wanted = "a file or a DICOM folder" if column in FOLDER_COLUMNS else "a file"
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic-link loop (before Python 3.13)
        raise InputError(f"{where}: {column} {path} is not {wanted} ({_kind(path)})") from None
    if not path.exists() or path.is_file() or (column in FOLDER_COLUMNS and path.is_dir()):
        return resolved  # missing (or a broken link): the case's own error, like the file it names
    raise InputError(f"{where}: {column} {path} is not {wanted} ({_kind(path)})")


def _kind(path: Path) -> str:
    """What is at `path`, in words, when it is not a regular file."""
    if path.is_symlink() and not path.exists():
        try:
            path.resolve(strict=True)
        except FileNotFoundError:
            return "a broken symbolic link"
        except (OSError, RuntimeError):
            return "a symbolic-link loop"
    if path.is_dir():
        return "a folder"
    if path.is_fifo():
        return "a named pipe"
    if path.is_char_device() or path.is_block_device():
        return "a device"
    if path.is_socket():
        return "a socket"
    return "not a regular file"


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (relative names and bytes, in sorted order);
    'missing' when `path` does not exist, so that the file appearing later changes the fingerprint."""
    path = Path(path)
    if not path.exists():
        return "missing"
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with open(file, "rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def case_fingerprint(options: list[str], inputs: dict[str, Path]) -> str:
    """Fingerprint of one case: its `ctmr-register` options (no output paths) and its inputs' content."""
    record = {
        "version": VERSION,
        "options": options,
        "inputs": {role: content_digest(path) for role, path in sorted(inputs.items())},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
