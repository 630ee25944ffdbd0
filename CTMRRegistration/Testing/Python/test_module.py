"""What can be checked of the Slicer module without the Slicer application."""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2]
MODULE_FILE = MODULE_DIR / "CTMRRegistration.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CTMRRegistration.ui"


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


def test_module_defines_the_four_slicer_classes():
    compile(MODULE_FILE.read_text(), str(MODULE_FILE), "exec")
    bases = {
        node.name: [base.id for base in node.bases if isinstance(base, ast.Name)]
        for node in module_tree().body if isinstance(node, ast.ClassDef)
    }
    assert bases["CTMRRegistration"] == ["ScriptedLoadableModule"]
    assert bases["CTMRRegistrationWidget"] == ["ScriptedLoadableModuleWidget"]
    assert bases["CTMRRegistrationLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["CTMRRegistrationTest"] == ["ScriptedLoadableModuleTest"]


def test_widget_names_used_by_the_module_exist_in_the_ui_file():
    widgets = {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).getroot().iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    assert used, "the module uses no widget from the .ui file"
    assert used <= set(widgets), f"missing in the .ui file: {used - set(widgets)}"
    assert widgets["fixedVolumeSelector"] == widgets["movingVolumeSelector"] == "qMRMLNodeComboBox"
    assert widgets["applyButton"] == "QPushButton"


def cmake_listed_files() -> set[str]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "CTMRRegistration")
    return set(re.findall(r"^\s+([\w./-]+\.\w+)\s*$", text, flags=re.MULTILINE))


def test_cmake_lists_every_library_file_and_resource():
    listed = cmake_listed_files()
    shipped = {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "CTMRRegistrationLib").glob("*.py")}
    shipped |= {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    shipped.add("CTMRRegistration.py")
    assert shipped - listed == set(), "not listed in CTMRRegistration/CMakeLists.txt"
    assert listed - shipped == set(), "listed in CMakeLists.txt but absent"


def test_extension_metadata():
    text = (MODULE_DIR.parent / "CMakeLists.txt").read_text()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf"set\(EXTENSION_{key} \"[^\"]+\"\)", text), key
    assert 'set(EXTENSION_DEPENDS "SlicerElastix")' in text
    assert "add_subdirectory(CTMRRegistration)" in text
