"""The documentation a newcomer reads: a short README, a reference generated from the code and current, every
command-line option and public name in it, no project history, and links that resolve."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
from pathlib import Path

import CTMRRegistrationLib
from CTMRRegistrationLib.apps import qa_cli, register_cli
from CTMRRegistrationLib.batch import cli as batch_cli

EXTENSION_DIR = Path(__file__).resolve().parents[2]
DOCS = EXTENSION_DIR / "docs"
HISTORY = re.compile(r"issue [0-9]+|[0-9a-f]{7,} \(|before the|was [0-9.]+ mm")


def build_reference():
    spec = importlib.util.spec_from_file_location("build_reference", DOCS / "build_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_is_generated_from_the_current_code():
    assert (DOCS / "reference.md").read_text() == build_reference().reference(), "run `make docs`"


def test_every_option_and_public_name_is_in_the_reference():
    text = (DOCS / "reference.md").read_text()
    for parser in (register_cli.build_parser(), qa_cli.build_parser(), batch_cli.build_parser()):
        for action in parser._actions:
            if action.help != "==SUPPRESS==":
                assert all(option in text for option in action.option_strings), action.option_strings
    for name in set(CTMRRegistrationLib.__all__) - {"__version__"}:
        assert f"### `{name}`" in text, name
        value = getattr(CTMRRegistrationLib, name)
        assert inspect.getdoc(value), f"{name} has no docstring"


def test_register_documents_each_of_its_keywords():
    register = CTMRRegistrationLib.RegistrationLogic.register
    keywords = [name for name, parameter in inspect.signature(register).parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
    doc = inspect.getdoc(register)
    undocumented = [name for name in keywords if not re.search(rf"\b{name}\b", doc)]
    assert not undocumented, undocumented


def test_readme_is_a_front_door():
    readme = (EXTENSION_DIR / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    for heading in ("## Two commands", "## Three ways in", "### Slicer panel", "### Python console",
                    "### Command line", "## Sample data and attribution"):
        assert heading in readme, heading
    assert "doi:10.7937/K9/TCIA.2018.3f08iejt" in readme and "CC BY 4.0" in readme


def test_no_project_history_in_docs_or_code():
    tracked = subprocess.run(["git", "ls-files", "README.md", "docs", "CTMRRegistration"], cwd=EXTENSION_DIR,
                             capture_output=True, text=True, check=True).stdout.split()
    hits = [f"{name}:{number}" for name in tracked if name.endswith((".md", ".py", ".txt", ".ui"))
            and (EXTENSION_DIR / name).is_file()
            for number, line in enumerate((EXTENSION_DIR / name).read_text().splitlines(), 1)
            if HISTORY.search(line)]
    assert not hits, hits


def test_relative_links_resolve():
    for page in [EXTENSION_DIR / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
