"""The library's layers: pure modules load no MRML, imports only go down, and nothing imports in a loop."""

import ast
import subprocess
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[2] / "CTMRRegistrationLib"
LAYERS = {"core": 0, "elastix": 1, "registration": 2, "landmarks": 2, "dicom": 2, "qa": 3, "mrml": 4, "apps": 5,
          "batch": 6}  # batch (ctmr-batch) runs apps.register_cli; nothing below it knows of the cohort runner
PURE = ("core", "elastix", "registration", "landmarks", "dicom", "qa")  # no vtk, no slicer, no MRML


def library_modules() -> dict[str, Path]:
    """Dotted names (relative to the package) of every library module."""
    return {".".join(path.relative_to(LIBRARY).with_suffix("").parts): path
            for path in LIBRARY.rglob("*.py") if path.name != "__main__.py"}


def imported_modules(name: str, path: Path) -> set[str]:
    """The library modules `name` imports (relative imports resolved), at any depth of its code."""
    package = name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{module}.{alias.name}" if module else alias.name for alias in node.names]
            found |= {t if t in library_modules() else module for t in targets}
    return {module for module in found if module in library_modules()}


def test_pure_layers_import_neither_vtk_nor_slicer():
    modules = [f"CTMRRegistrationLib.{name}" for name in library_modules()
               if name.split(".")[0] in PURE and not name.endswith("__init__")]
    code = "; ".join(f"import {module}" for module in modules)
    code += "; import sys; print(sorted(m for m in ('vtk', 'slicer', 'vtkmodules') if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]", completed.stdout


def test_imports_only_go_down_the_layers():
    upward = []
    for name, path in library_modules().items():
        layer = LAYERS.get(name.split(".")[0])
        if layer is None:  # the package face and __main__
            continue
        for target in imported_modules(name, path):
            target_layer = LAYERS.get(target.split(".")[0])
            if target_layer is not None and target_layer > layer:
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_no_import_loop():
    graph = {name: imported_modules(name, path) for name, path in library_modules().items()}
    visiting, done, loops = set(), set(), []

    def visit(name, trail):
        if name in done:
            return
        if name in visiting:
            loops.append(" -> ".join(trail[trail.index(name):] + [name]))
            return
        visiting.add(name)
        for target in graph.get(name, ()):
            visit(target, trail + [name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])
    assert loops == []


def test_the_package_face_is_lazy():
    code = ("import sys, CTMRRegistrationLib as lib; vtk = 'vtkmodules.vtkCommonCore'; before = vtk in sys.modules; "
            "lib.RegistrationLogic; print(before, vtk in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["False", "True"]
