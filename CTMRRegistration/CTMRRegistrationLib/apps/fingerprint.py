"""Fingerprints that tell `ctmr-batch` whether a case must be computed again.

A case's fingerprint hashes the library version, the `ctmr-register` options of the case (output paths
excluded: they are the same on every run) and the content of every input file or DICOM folder, so a rerun
recomputes a case exactly when something that could change its result has changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..core.resources import VERSION

CHUNK = 1 << 20


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
