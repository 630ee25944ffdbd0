"""The module file read as source: the Slicer APIs it calls, found in its syntax tree."""

from __future__ import annotations

import ast
from pathlib import Path

EXTENSION_DIR = Path(__file__).resolve().parents[2]
MODULE_FILE = EXTENSION_DIR / "CTMRRegistration" / "CTMRRegistration.py"
ROOTS = ("slicer.util.", "slicer.testing.", "slicer.app.", "SampleData.", "slicer.parameterNodeWrapper.",
         "slicer.ScriptedLoadableModule.")
# methods of Slicer objects the module reaches through variables: the name alone says which API
INSTANCE_METHODS = {"connectGui", "disconnectGui", "downloadFromSource", "sourceForSampleName", "delayDisplay",
                    "resourcePath", "getParameterNode", "widgetRepresentation"}


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


def dotted(node: ast.AST) -> str | None:
    """'a.b.c' for an attribute chain on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def guarded_names(tree: ast.AST) -> set[str]:
    """APIs used only under `if hasattr(X, "name"):` (a fallback for Slicer versions without them)."""
    guarded = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and isinstance(test, ast.Call) and getattr(test.func, "id", "") == "hasattr":
            owner, name = node.test.args
            guarded.add(f"{dotted(owner)}.{name.value}")
    return guarded


def slicer_apis(tree: ast.AST) -> set[str]:
    """Every Slicer API the module names: slicer.util/testing/app, SampleData, the parameter node wrapper and
    scripted-module classes it imports, and the instance methods in INSTANCE_METHODS (as '*.name')."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slicer."):
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Attribute):
            name = dotted(node)
            if name and name.startswith(ROOTS):
                depth = 3 if name.startswith(("slicer.", "SampleData.SampleDataLogic.")) else 2
                found.add(".".join(name.split(".")[:depth]))
            if node.attr in INSTANCE_METHODS:
                found.add(f"*.{node.attr}")
    return found
