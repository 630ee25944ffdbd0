"""Packaging: the file lists of CMakeLists.txt and pyproject.toml match the tree (a new file cannot be left out
silently), the console scripts resolve, and only the cohort runner needs Dask (the `batch` extra)."""

import ast
import fnmatch
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

MODULE = Path(__file__).resolve().parents[2]  # CTMRRegistration/, the Slicer module
ROOT = MODULE.parent
LIBRARY = MODULE / "CTMRRegistrationLib"
RESOURCES = MODULE / "Resources"
BATCH_ONLY = ("dask", "distributed", "bokeh", "psutil")  # the `batch` extra
DASK_MESSAGE = 'ctmr-batch: error: the cohort runner needs Dask: pip install "ctmr-registration[batch]"'


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def cmake_list(name: str) -> set[str]:
    """The entries of `set(name ...)` in CTMRRegistration/CMakeLists.txt, ${MODULE_NAME} expanded."""
    text = (MODULE / "CMakeLists.txt").read_text()
    found = re.search(rf"set\(\s*{name}\s+(.*?)\)", text, re.DOTALL)
    assert found, f"no set({name} ...) in {MODULE / 'CMakeLists.txt'}"
    entries = [line.split("#")[0].strip() for line in found.group(1).splitlines()]
    return {entry.replace("${MODULE_NAME}", MODULE.name) for entry in entries if entry}


def files_under(folder: Path, pattern: str = "*") -> set[Path]:
    return {path for path in folder.rglob(pattern) if path.is_file() and "__pycache__" not in path.parts}


def difference(listed: set[str], present: set[str], where: str) -> str:
    """A message naming the files present but not listed, and listed but absent."""
    missing, extra = sorted(present - listed), sorted(listed - present)
    return (f"{where} does not match the tree: not listed {missing or 'none'}; "
            f"listed but absent {extra or 'none'}")


def distribution_name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement)[0].lower()


def library_modules() -> list[str]:
    """Dotted names of every library module but the cohort runner's and __main__."""
    names = []
    for path in sorted(files_under(LIBRARY, "*.py")):
        parts = path.relative_to(LIBRARY).with_suffix("").parts
        if parts[0] == "batch" or parts[-1] == "__main__":
            continue
        names.append(".".join(("CTMRRegistrationLib", *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return names


def test_cmake_lists_every_python_file():
    present = {str(path.relative_to(MODULE)) for path in files_under(MODULE, "*.py")
               if path.relative_to(MODULE).parts[0] != "Testing"}
    listed = cmake_list("MODULE_PYTHON_SCRIPTS")
    assert listed == present, difference(listed, present, "MODULE_PYTHON_SCRIPTS in CTMRRegistration/CMakeLists.txt")


def test_cmake_lists_every_resource():
    present = {str(path.relative_to(MODULE)) for path in files_under(RESOURCES)}
    listed = cmake_list("MODULE_PYTHON_RESOURCES")
    assert listed == present, difference(listed, present, "MODULE_PYTHON_RESOURCES in CTMRRegistration/CMakeLists.txt")


def test_pyproject_lists_every_package():
    folders = {path.parent for path in files_under(LIBRARY, "*.py")}
    without_init = sorted(str(folder.relative_to(MODULE)) for folder in folders
                          if not (folder / "__init__.py").exists())
    assert without_init == [], f"folders of library modules without an __init__.py: {without_init}"
    present = {".".join(("CTMRRegistrationLib", *folder.relative_to(LIBRARY).parts)) for folder in folders}
    present |= {".".join(("CTMRRegistrationLib.Resources", *folder.relative_to(RESOURCES).parts))
                for folder in {path.parent for path in files_under(RESOURCES)} | {RESOURCES}}
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    assert listed == present, difference(listed, present, "[tool.setuptools] packages in pyproject.toml")


def test_pyproject_package_data_takes_every_resource():
    patterns = [pattern for patterns in pyproject()["tool"]["setuptools"]["package-data"].values()
                for pattern in patterns]
    left_out = sorted(str(path.relative_to(MODULE)) for path in files_under(RESOURCES)
                      if not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns))
    assert left_out == [], f"resources no [tool.setuptools.package-data] pattern of pyproject.toml takes: {left_out}"


def test_console_scripts_resolve():
    for name, target in pyproject()["project"]["scripts"].items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function, None)), f"{name} = {target} does not resolve"


def test_only_the_cohort_runner_needs_the_batch_extra():
    project = pyproject()["project"]
    core = {distribution_name(requirement) for requirement in project["dependencies"]}
    extra = {distribution_name(requirement) for requirement in project["optional-dependencies"]["batch"]}
    assert core.isdisjoint(BATCH_ONLY) and extra == set(BATCH_ONLY), (core, extra)
    importers = []
    for path in sorted(files_under(LIBRARY, "*.py")):
        if path.relative_to(LIBRARY).parts[0] == "batch":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            importers += [f"{path.relative_to(LIBRARY)}: {name}" for name in names
                          if name and name.split(".")[0] in BATCH_ONLY]
    assert importers == [], f"modules outside batch/ that import the batch extra: {importers}"


def test_library_imports_and_ctmr_batch_fails_cleanly_without_dask(tmp_path):
    """Every module but batch/ imports with Dask unimportable; ctmr-batch then says what to install, exit 2."""
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case,fixed,moving\na,ct.nii,mr.nii\n")
    code = "\n".join([
        "import sys",
        *(f"sys.modules[{name!r}] = None" for name in ("dask", "distributed")),
        "import CTMRRegistrationLib",
        *(f"import {name}" for name in library_modules()),
        "assert not {'dask', 'distributed'} & {name for name, module in sys.modules.items() if module is not None}",
        "print('imported', flush=True)",
        f"sys.argv = ['ctmr-batch', {str(manifest)!r}, '--output-dir', {str(tmp_path / 'out')!r}]",
        "from CTMRRegistrationLib.batch.cli import main",  # what the ctmr-batch console script runs
        "sys.exit(main())",
    ])
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.stdout.strip() == "imported", completed.stderr
    assert completed.stderr.strip() == DASK_MESSAGE  # one line, no traceback
    assert completed.returncode == 2
    assert not (tmp_path / "out").exists()
