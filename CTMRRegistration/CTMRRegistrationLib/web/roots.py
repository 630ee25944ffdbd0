"""The folders `ctmr-web` may read and write: every path a user types must lie inside one of them."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError


class DataRoots:
    """Folders given at start (`--data-root`); `resolve` refuses any path outside them."""

    def __init__(self, folders: list[Path]):
        self.folders = [Path(folder).expanduser().resolve() for folder in folders]
        missing = [str(folder) for folder in self.folders if not folder.is_dir()]
        if missing:
            raise InputError(f"--data-root is not a folder: {', '.join(missing)}")

    def resolve(self, text: str, what: str = "path") -> Path:
        """`text` as an absolute path (relative ones start at the first root); InputError when outside the roots."""
        text = (text or "").strip()
        if not text:
            raise InputError(f"give the {what}")
        path = Path(text).expanduser()
        path = (path if path.is_absolute() else self.folders[0] / path).resolve()  # resolve: no escape by '..' or links
        if not any(path == folder or folder in path.parents for folder in self.folders):
            raise InputError(f"{what} {path} is outside the data folders ({', '.join(map(str, self.folders))})")
        return path

    def optional(self, text: str, what: str) -> Path | None:
        """Like `resolve`, None for an empty field."""
        return self.resolve(text, what) if (text or "").strip() else None
