"""The extension as Slicer runs it, checked without Slicer: the Slicer APIs the module calls against the versions
that have them (read from Slicer's sources, Testing/slicer_api_versions.json), the run-in-Slicer script against
Slicer's documented command-line options, a self-test that needs no main window and waits for no click, and
the metadata the Extensions Manager shows."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from slicer_module_source import EXTENSION_DIR, MODULE_FILE, dotted, guarded_names, module_tree, slicer_apis

TESTING_DIR = EXTENSION_DIR / "Testing"
VERSION_TABLE = json.loads((TESTING_DIR / "slicer_api_versions.json").read_text())
MESSAGE_BOXES = {"slicer.util.errorDisplay", "slicer.util.warningDisplay", "slicer.util.infoDisplay",
                 "slicer.util.confirmOkCancelDisplay", "slicer.util.confirmYesNoDisplay", "slicer.util.messageBox"}
MAIN_WINDOW_ONLY = {"slicer.util.selectModule", "slicer.util.selectedModule", "slicer.util.moduleSelector"}


def version(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of '5.10' or '5.10.0'."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def minimum_version() -> tuple[int, ...]:
    for node in module_tree().body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MINIMUM_SLICER_VERSION":
            return ast.literal_eval(node.value)
    raise AssertionError("the module states no MINIMUM_SLICER_VERSION")


def stated_minimum() -> str:
    return "Slicer {} or newer".format(".".join(map(str, minimum_version())))


# ----- versions ------------------------------------------------------------------------------------------------------


def test_every_slicer_api_the_module_calls_is_in_the_version_table():
    used = slicer_apis(module_tree()) | slicer_apis(ast.parse((TESTING_DIR / "run_self_test.py").read_text()))
    assert used, "no Slicer API found: the reader is broken"
    missing = used - set(VERSION_TABLE["first_version"])
    assert not missing, f"look up the first Slicer release of {sorted(missing)} and add it to the table"


def test_the_stated_minimum_has_every_api_not_behind_a_fallback():
    tree = module_tree()
    guarded = guarded_names(tree)
    too_new = {name: VERSION_TABLE["first_version"][name] for name in slicer_apis(tree) - guarded
               if version(VERSION_TABLE["first_version"][name]) > version("{}.{}".format(*minimum_version()))}
    assert not too_new, f"newer than {stated_minimum()}: {too_new}"
    assert "SampleData.SampleDataLogic.registerCustomSampleDataCategory" in guarded, "the 5.12 call lost its fallback"
    checked = {version(tag.lstrip("v")) for tag in VERSION_TABLE["checked_tags"]}
    assert version("{}.{}".format(*minimum_version())) in checked, "the minimum must be a release that was checked"


def test_the_minimum_is_stated_in_readme_metadata_and_module():
    assert stated_minimum() in (EXTENSION_DIR / "README.md").read_text()
    assert stated_minimum() in (EXTENSION_DIR / "CMakeLists.txt").read_text()
    assert stated_minimum() in (TESTING_DIR / "run_in_slicer.sh").read_text()
    source = MODULE_FILE.read_text()
    assert "if (slicer.app.majorVersion, slicer.app.minorVersion) < MINIMUM_SLICER_VERSION:" in source
    # the check runs before the library (which needs Python 3.10) is imported
    assert source.index("MINIMUM_SLICER_VERSION:") < source.index("from CTMRRegistrationLib")


# ----- the run-in-Slicer script ------------------------------------------------------------------------------------


def documented_options() -> set[str]:
    lines = (TESTING_DIR / "slicer_command_options.txt").read_text().splitlines()
    return {line.split("\t")[0] for line in lines if line.startswith("-")}


def test_run_in_slicer_uses_only_documented_slicer_options():
    script = (TESTING_DIR / "run_in_slicer.sh").read_text()
    command = script[script.index('exec "$SLICER"'):]
    used = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", command))
    assert {"--python-script", "--additional-module-paths"} <= used
    assert used <= documented_options(), used - documented_options()


def run_runner(tmp_path: Path, test_body: str) -> int:
    """run_self_test.py on a stand-in module whose test does `test_body`, with slicer.util.exit recorded."""
    module_dir = tmp_path / "module"
    module_dir.mkdir()
    (module_dir / "CTMRRegistration.py").write_text(textwrap.dedent(f"""
        import unittest
        class CTMRRegistrationTest(unittest.TestCase):
            def test_it(self):
                {test_body}
        """))
    stand_in = tmp_path / "slicer"
    stand_in.mkdir()
    (stand_in / "__init__.py").write_text("")
    (stand_in / "util.py").write_text(
        "import os\ndef exit(status=0):\n    open(os.environ['EXIT_FILE'], 'w').write(str(status))\n")
    environment = os.environ | {"CTMR_MODULE_DIR": str(module_dir), "EXIT_FILE": str(tmp_path / "exit"),
                                "PYTHONPATH": str(tmp_path)}
    subprocess.run([sys.executable, str(TESTING_DIR / "run_self_test.py")], env=environment, check=True,
                   capture_output=True, timeout=60)
    return int((tmp_path / "exit").read_text())


@pytest.mark.parametrize("body, status", [("pass", 0), ("self.fail('no')", 1), ("raise RuntimeError('x')", 1),
                                          ("import no_such_module", 1)])
def test_run_in_slicer_exits_slicer_with_the_test_result(tmp_path, body, status):
    assert run_runner(tmp_path, body) == status


# ----- the self-test: unattended, with or without a main window -----------------------------------------------------


def definitions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """Module functions by name and methods as 'Class.method'."""
    found = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        found |= {f"{cls.name}.{node.name}": node for node in cls.body if isinstance(node, ast.FunctionDef)}
    return found


def calls_outside_main_window_checks(function: ast.FunctionDef):
    """The calls in `function`, leaving out those under `if slicer.util.mainWindow():`."""
    def visit(node):
        if isinstance(node, ast.If) and "mainWindow" in ast.unparse(node.test):
            yield from (call for child in node.orelse for call in visit(child))
            return
        if isinstance(node, ast.Call):
            yield node
        for child in ast.iter_child_nodes(node):
            yield from visit(child)
    yield from visit(function)


def reachable_from_self_test(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """The module's functions and methods that the self-test's methods can reach."""
    known = definitions(tree)
    test_methods = [name for name in known if name.startswith("CTMRRegistrationTest.")]
    reached, todo = {}, list(test_methods)
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached[name] = known[name]
        for call in calls_outside_main_window_checks(known[name]):
            callee = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
            todo += [other for other in known if other == callee or other.endswith(f".{callee}")]
    return reached


def test_the_self_test_needs_no_main_window():
    tree = module_tree()
    reached = reachable_from_self_test(tree)
    assert "loadSamplePair" in reached and "CTMRRegistrationWidget.onApplyButton" in reached
    offenders = {name: dotted(call.func) for name, function in reached.items()
                 for call in calls_outside_main_window_checks(function) if dotted(call.func) in MAIN_WINDOW_ONLY}
    assert not offenders, f"these need a main window: {offenders}"


def test_the_self_test_opens_no_message_box():
    """Message boxes open only in CTMRRegistrationWidget.showMessage and askUser, only with messageBoxes on, and
    the self-test turns them off on the widget it drives."""
    tree = module_tree()
    opening = {name for name, function in definitions(tree).items() for node in ast.walk(function)
               if isinstance(node, ast.Attribute) and dotted(node) in MESSAGE_BOXES}
    assert opening == {"CTMRRegistrationWidget.showMessage", "CTMRRegistrationWidget.askUser"}
    assert "if self.messageBoxes:" in ast.unparse(definitions(tree)["CTMRRegistrationWidget.showMessage"])
    assert "return self.messageBoxes and " in ast.unparse(definitions(tree)["CTMRRegistrationWidget.askUser"])
    test_source = ast.unparse(next(n for n in tree.body if getattr(n, "name", "") == "CTMRRegistrationTest"))
    assert "widget.messageBoxes = False" in test_source


# ----- layout and metadata -----------------------------------------------------------------------------------------


def cmake_value(key: str) -> str:
    match = re.search(rf'set\(EXTENSION_{key} "([^"]*)"\)', (EXTENSION_DIR / "CMakeLists.txt").read_text())
    assert match, key
    return match.group(1)


def test_ctest_runs_the_self_test_from_the_extension_testing_folder():
    assert re.search(r"if\(BUILD_TESTING\)\s+add_subdirectory\(Testing\)\s+endif\(\)",
                     (EXTENSION_DIR / "CMakeLists.txt").read_text())
    registration = (TESTING_DIR / "CMakeLists.txt").read_text()
    assert "slicer_add_python_unittest(SCRIPT ${CMAKE_SOURCE_DIR}/CTMRRegistration/CTMRRegistration.py)" in registration
    assert (EXTENSION_DIR / "CTMRRegistration" / "Testing" / "Python").is_dir()
    assert (EXTENSION_DIR / "CTMRRegistration" / "Resources" / "UI" / "CTMRRegistration.ui").is_file()


def test_metadata_urls_name_files_of_this_repository():
    for key in ("ICONURL", "SCREENSHOTURLS"):
        for url in cmake_value(key).split():
            path = EXTENSION_DIR / url.split("/main/", 1)[1]
            assert path.is_file() and path.suffix == ".png", url
    for url in cmake_value("SCREENSHOTURLS").split():
        assert (EXTENSION_DIR / url.split("/main/", 1)[1]).stat().st_size > 50_000, f"{url}: not a real screenshot"
    assert cmake_value("HOMEPAGE").startswith("https://github.com/")
    assert "TODO" not in cmake_value("CONTRIBUTORS") and "example" not in cmake_value("CONTRIBUTORS").lower()


def test_license_file_is_the_declared_license():
    license_text = (EXTENSION_DIR / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert 'license = "Apache-2.0"' in (EXTENSION_DIR / "pyproject.toml").read_text()


def test_slicer_elastix_is_one_story():
    """The extension installs SlicerElastix with it, the module declares it, the README says so."""
    assert cmake_value("DEPENDS") == "SlicerElastix"
    assert 'self.parent.dependencies = ["Elastix"]' in MODULE_FILE.read_text()
    readme = (EXTENSION_DIR / "README.md").read_text()
    assert "SlicerElastix" in readme and "SlicerElastix" in cmake_value("DESCRIPTION")
