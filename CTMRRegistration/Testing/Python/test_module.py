"""What can be checked of the Slicer module without the Slicer application.

The module file imports qt and Slicer's scripted-module classes, which exist only inside Slicer, so it is read
as source: its syntax tree, the .ui file it loads, and the CMake files that ship it. Everything it does besides
Qt wiring lives in CTMRRegistrationLib.apps.panel, tested here (pure parts) and in test_panel.py (every panel
action on a real slicer-core scene).
"""

import ast
import dataclasses
import inspect
import re
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTMRRegistrationLib import RegistrationLogic, RegistrationResult
from CTMRRegistrationLib.apps import panel
from CTMRRegistrationLib.apps.panel import PanelSettings, registration_arguments
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.errors import InputError
from CTMRRegistrationLib.core.masks import MASK_MODES
from CTMRRegistrationLib.elastix.backends import BACKENDS
from CTMRRegistrationLib.mrml.nodes import add_volume_from_sitk, sitk_from_volume
from CTMRRegistrationLib.mrml.scene_registration import SceneRegistrationResult
from CTMRRegistrationLib.qa.assess import QAResult
from CTMRRegistrationLib.qa.overlay import normalise
from CTMRRegistrationLib.qa.pictures import checkerboard
from CTMRRegistrationLib.registration.pipeline import BIAS_CORRECTIONS, INITIALIZATIONS, presets_by_stage

MODULE_DIR = Path(__file__).resolve().parents[2]
MODULE_FILE = MODULE_DIR / "CTMRRegistration.py"
PANEL_FILE = MODULE_DIR / "CTMRRegistrationLib" / "apps" / "panel.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CTMRRegistration.ui"
# Parameter-node fields that the panel layer handles itself rather than passing to the library.
PANEL_FIELDS = {"fixedVolume", "movingVolume", "metricsTable", "verdict", "outputDicomReg"}


# ----- reading the module file ------------------------------------------------------------------------------------


def module_source() -> str:
    return MODULE_FILE.read_text()


def module_tree() -> ast.Module:
    return ast.parse(module_source(), filename=str(MODULE_FILE))


def classes() -> dict[str, ast.ClassDef]:
    return {node.name: node for node in module_tree().body if isinstance(node, ast.ClassDef)}


def constant(name: str):
    for node in module_tree().body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


@dataclasses.dataclass
class Field:
    name: str
    type: str  # 'node', 'bool', 'str', 'Path'
    node_class: str | None = None
    choices: list | None = None
    default: object = None


def parameter_fields() -> dict[str, Field]:
    """The parameter node's fields, declared once by PanelSettings: name, type, choices, default."""
    hints = typing.get_type_hints(PanelSettings)
    fields = {}
    for field in dataclasses.fields(PanelSettings):
        kind = next((arg for arg in typing.get_args(hints[field.name]) if arg is not type(None)), hints[field.name])
        choices = field.metadata.get("choices")
        if choices is not None:
            fields[field.name] = Field(field.name, kind.__name__, choices=list(choices), default=field.default)
        elif kind.__name__.startswith("vtkMRML"):
            fields[field.name] = Field(field.name, "node", node_class=kind.__name__)
        else:
            fields[field.name] = Field(field.name, kind.__name__, default=field.default)
    return fields


def register_keywords() -> set[str]:
    """What RegistrationLogic.register takes by name."""
    parameters = inspect.signature(RegistrationLogic.register).parameters
    return {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


# ----- reading the .ui file ---------------------------------------------------------------------------------------


def ui_root() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ui_root().iter("widget")}


def widget_property(widget: ET.Element, name: str) -> ET.Element | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return prop[0]
    return None


def parameter_widgets() -> dict[str, ET.Element]:
    """SlicerParameterName -> widget."""
    found = {}
    for widget in ui_root().iter("widget"):
        prop = widget_property(widget, "SlicerParameterName")
        if prop is not None:
            assert prop.text not in found, f"two widgets for {prop.text}"
            found[prop.text] = widget
    return found


# ----- the module file ---------------------------------------------------------------------------------------------


def test_module_compiles_and_defines_the_four_slicer_classes():
    compile(module_source(), str(MODULE_FILE), "exec")
    bases = {name: [b.id for b in node.bases if isinstance(b, ast.Name)] for name, node in classes().items()}
    assert bases["CTMRRegistration"] == ["ScriptedLoadableModule"]
    assert bases["CTMRRegistrationWidget"][0] == "ScriptedLoadableModuleWidget"
    assert bases["CTMRRegistrationLogic"] == ["ScriptedLoadableModuleLogic", "RegistrationLogic"]
    assert bases["CTMRRegistrationTest"] == ["ScriptedLoadableModuleTest"]
    imports = {alias.name: node.module for node in module_tree().body if isinstance(node, ast.ImportFrom)
               for alias in node.names}
    assert imports["RegistrationLogic"] == "CTMRRegistrationLib"
    wrapped = [node for node in module_tree().body if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", "") == "CTMRRegistrationParameterNode"]
    assert [ast.unparse(node.value) for node in wrapped] == ["parameterNodeWrapper(parameterNodeClass())"]


def test_every_library_name_the_module_imports_exists():
    """The library changes under the module: a renamed function must fail here, not at Slicer's startup."""
    imports = [node for node in module_tree().body
               if isinstance(node, ast.ImportFrom) and node.module.startswith("CTMRRegistrationLib")]
    assert imports
    for node in imports:
        exec(compile(ast.Module([node], []), str(MODULE_FILE), "exec"), {})


def test_logic_is_a_thin_subclass():
    """The logic adds the parameter node only: `register` is the library's, with its signature."""
    methods = {node.name for node in classes()["CTMRRegistrationLogic"].body if isinstance(node, ast.FunctionDef)}
    assert methods == {"__init__", "getParameterNode"}


def test_the_parameter_node_class_is_built_from_the_panel_settings():
    """parameterNodeClass (run here with a stand-in for Slicer's Choice) gives each PanelSettings field its
    annotation: the node class, the choices, bool, str or Path, with the same defaults."""
    function = next(n for n in module_tree().body if getattr(n, "name", None) == "parameterNodeClass")

    class Choice:
        def __init__(self, choices):
            self.choices = choices

    namespace = {"dataclasses": dataclasses, "typing": typing, "Annotated": typing.Annotated, "Choice": Choice,
                 "PanelSettings": PanelSettings}
    exec(compile(ast.Module([function], []), str(MODULE_FILE), "exec"), namespace)
    built = namespace["parameterNodeClass"]()
    annotations = built.__annotations__
    for name, field in parameter_fields().items():
        annotation = annotations[name]
        if field.choices is not None:
            assert typing.get_args(annotation)[1].choices == field.choices, name
        elif field.type == "node":
            assert annotation.__name__ == field.node_class, name
        else:
            assert annotation.__name__ == field.type, name
        if field.type in ("bool", "str"):
            assert getattr(built, name) == field.default, name
    assert list(annotations) == list(parameter_fields())


def test_module_metadata():
    assignments = {}
    init = next(n for n in classes()["CTMRRegistration"].body if getattr(n, "name", None) == "__init__")
    for node in ast.walk(init):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            assignments[node.targets[0].attr] = node.value
    assert ast.literal_eval(assignments["title"]) == "CT-MR Registration"
    assert ast.literal_eval(assignments["categories"]) == ["Registration"]
    assert ast.literal_eval(assignments["dependencies"]) == ["Elastix"]
    help_text = ast.literal_eval(assignments["helpText"])
    assert re.findall(r"<br>(\d)\. ", help_text) == ["1", "2", "3", "4", "5"]
    assert assignments["acknowledgementText"].id == "SAMPLE_DATA_ATTRIBUTION"
    attribution = constant("SAMPLE_DATA_ATTRIBUTION")
    assert "10.7937/K9/TCIA.2018.3f08iejt" in attribution and "CC BY 4.0" in attribution


def test_self_test_runs_every_test_method():
    test_class = classes()["CTMRRegistrationTest"]
    methods = {n.name for n in test_class.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
    run_test = next(n for n in test_class.body if getattr(n, "name", None) == "runTest")
    called = {n.attr for n in ast.walk(run_test) if isinstance(n, ast.Attribute) and n.attr.startswith("test_")}
    assert {"test_RecoversKnownPose", "test_SampleDataLoadsThePair"} <= methods
    assert called == methods


def test_sample_data_source_files_exist():
    assert len(constant("SAMPLE_NODE_NAMES")) == 2
    assert (resources.resources_dir() / "Icons" / "CTMRRegistrationSampleData.png").is_file()
    assert resources.sample_ct_path().is_file() and resources.sample_mr_path().is_file()
    assert 'sampleName=SAMPLE_NAME' in module_source() and "customDownloader=loadSamplePair" in module_source()


# ----- the .ui file ------------------------------------------------------------------------------------------------


def test_ui_file_is_designer_xml_with_unique_names():
    root = ui_root()
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.find("class").text == "CTMRRegistration"
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "CTMRRegistration")
    names = [w.get("name") for w in root.iter("widget")] + [w.get("name") for w in root.iter("layout")]
    assert len(names) == len(set(names)), "duplicate object names"
    declared = {c.find("class").text for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if not c.startswith("Q")} <= declared


EXPECTED_CLASSES = {
    "applyButton": "QPushButton", "cancelButton": "QPushButton", "progressBar": "QProgressBar",
    "statusLabel": "QLabel", "metricsTableView": "qMRMLTableView", "showOverlayButton": "QPushButton",
    "showCheckerboardButton": "QPushButton", "openReportButton": "QPushButton",
}


def test_widget_names_used_by_the_module_exist_in_the_ui_file():
    widgets = {name: w.get("class") for name, w in ui_widgets().items()}
    used = set(re.findall(r"\.ui\.(\w+)", module_source()))
    assert used, "the module uses no widget from the .ui file"
    assert used <= set(widgets), f"missing in the .ui file: {used - set(widgets)}"
    for name, cls in EXPECTED_CLASSES.items():
        assert name in used and widgets[name] == cls, name


def test_every_mrml_widget_gets_the_scene():
    root = ui_root()
    scene_connection = ("CTMRRegistration", "mrmlSceneChanged(vtkMRMLScene*)", "setMRMLScene(vtkMRMLScene*)")
    connected = {c.find("receiver").text for c in root.iter("connection")
                 if (c.find("sender").text, c.find("signal").text, c.find("slot").text) == scene_connection}
    mrml = {name for name, w in ui_widgets().items()
            if w.get("class").startswith("qMRML") and name != "CTMRRegistration"}
    assert mrml == connected


def test_slicer_parameter_names_match_the_parameter_node():
    fields, widgets = parameter_fields(), parameter_widgets()
    assert set(widgets) == set(fields), (
        f"no widget: {set(fields) - set(widgets)}; no field: {set(widgets) - set(fields)}")


def test_each_parameter_widget_can_show_its_type():
    """The widget class is one that Slicer's parameterNodeWrapper connects to the field's type, and what the
    .ui file shows before connection agrees with the field (node types, choices, checked state)."""
    widgets = parameter_widgets()
    for name, field in parameter_fields().items():
        widget, cls = widgets[name], widgets[name].get("class")
        if field.type == "node":
            assert cls == "qMRMLNodeComboBox", name
            node_types = [s.text for s in widget_property(widget, "nodeTypes")]
            assert node_types == [field.node_class], name
        elif field.type == "bool":
            assert cls == "QCheckBox", name
            assert widget_property(widget, "checked").text == str(field.default).lower(), name
        elif field.choices is not None:
            assert cls == "QComboBox", name
            items = [item.find("property/string").text for item in widget.findall("item")]
            assert items == field.choices, name
            assert field.default in field.choices, name
        elif field.type == "Path":
            assert cls == "ctkPathLineEdit", name
        else:
            assert (field.type, cls) in (("str", "QLabel"), ("str", "QLineEdit")), name


def test_choices_are_the_library_values():
    fields = parameter_fields()
    assert fields["backend"].choices == list(BACKENDS)
    assert list(BIAS_CORRECTIONS) == fields["biasCorrection"].choices
    assert list(MASK_MODES) == fields["maskMode"].choices
    assert list(INITIALIZATIONS) == fields["initialization"].choices


def snake_case(name: str) -> str:
    return re.sub(r"([A-Z])", lambda match: "_" + match.group(1).lower(), name)


def test_one_name_per_option_from_parameter_node_to_register():
    """Each field the panel passes is the camelCase form of the register keyword it becomes."""
    arguments = registration_arguments(PanelSettings())
    stage_boxes = {"rigidStage", "affineStage", "deformableStage"}
    for name in set(parameter_fields()) - PANEL_FIELDS - stage_boxes:
        keyword = "presets" if name == "preset" else snake_case(name)
        assert keyword in arguments and keyword in register_keywords(), name


# ----- the one place where the panel calls the library -------------------------------------------------------------


def register_calls() -> list[ast.Call]:
    widget = classes()["CTMRRegistrationWidget"]
    return [node for node in ast.walk(widget) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == "register"]


def test_the_widget_registers_once_through_the_panel_layer():
    calls = register_calls()
    assert len(calls) == 1
    assert ast.unparse(calls[0].func) == "self.panel.register"
    assert [ast.unparse(a) for a in calls[0].args] == ["p"]
    assert {k.arg for k in calls[0].keywords} == {"progress", "cancelled"}


def test_registration_arguments_are_register_keywords():
    preset = resources.parameter_file("Affine")
    variants = [
        PanelSettings(),
        PanelSettings(affineStage=True, deformableStage=True, initialization="center",
                      biasCorrection="off", backend="itk-elastix", harden=True, useMasks=False),
        PanelSettings(affineStage=True, preset=preset),
    ]
    for settings in variants:
        arguments = registration_arguments(settings)
        assert set(arguments) <= register_keywords(), set(arguments) - register_keywords()
    defaults = registration_arguments(variants[0])
    assert defaults["stages"] == ("rigid",)
    assert defaults["initialization"] == "search" and defaults["bias_correction"] == "auto"
    assert defaults["presets"] == [] and defaults["crop"] is True and defaults["report_folder"] is None
    assert defaults["fixed_landmarks"] is None and defaults["moving_segmentation"] is None
    assert registration_arguments(variants[1])["stages"] == ("rigid", "affine", "deformable")
    assert registration_arguments(variants[1])["initialization"] == "center"
    assert presets_by_stage(registration_arguments(variants[2])["presets"]) == {"affine": preset}


def test_a_bad_preset_is_an_input_error():
    with pytest.raises(InputError, match="README.md"):
        presets_by_stage(registration_arguments(PanelSettings(preset=resources.sample_data_dir() / "README.md"))[
            "presets"])


def test_every_parameter_reaches_the_library_or_is_handled_by_the_panel():
    tree = ast.parse(PANEL_FILE.read_text())
    function = next(n for n in tree.body if getattr(n, "name", None) == "registration_arguments")
    passed = {n.attr for n in ast.walk(function) if isinstance(n, ast.Attribute)
              and isinstance(n.value, ast.Name) and n.value.id == "settings"}
    fields = set(parameter_fields())
    assert PANEL_FIELDS <= fields
    assert passed | PANEL_FIELDS == fields, fields - (passed | PANEL_FIELDS)
    others = [n for n in tree.body if n is not function]
    handled = {n.attr for node in others for n in ast.walk(node) if isinstance(n, ast.Attribute)
               and isinstance(n.value, ast.Name) and n.value.id == "settings"}
    assert PANEL_FIELDS <= handled, PANEL_FIELDS - handled


def test_empty_paths_are_none():
    assert panel.optional_path(Path()) is None and panel.optional_path("") is None
    assert panel.optional_path(None) is None and panel.optional_path(Path("/tmp/x")) == Path("/tmp/x")


def test_user_masks_reach_the_library_and_the_reg_export_needs_a_result(context):
    fixed_mask = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fixed mask")
    arguments = registration_arguments(PanelSettings(fixedMask=fixed_mask, maskMode="replace"))
    assert arguments["fixed_mask"] is fixed_mask and arguments["moving_mask"] is None
    assert arguments["mask_mode"] == "replace"
    volumes = dict(fixedVolume=object(), movingVolume=object())
    with pytest.raises(InputError, match="DICOM REG file"):
        panel.Panel(RegistrationLogic(context)).export_dicom_registration(PanelSettings(**volumes))
    with pytest.raises(InputError, match="register first"):
        panel.Panel(RegistrationLogic(context)).export_dicom_registration(
            PanelSettings(**volumes, outputDicomReg=Path("/tmp/reg.dcm")))


def test_apply_problems():
    assert panel.apply_problem(PanelSettings()) == "Select the fixed and the moving volume."
    volume = object()
    assert "must differ" in panel.apply_problem(PanelSettings(fixedVolume=volume, movingVolume=volume))
    assert "stage" in panel.apply_problem(PanelSettings(fixedVolume=volume, movingVolume=object(), rigidStage=False))
    assert panel.apply_problem(PanelSettings(fixedVolume=volume, movingVolume=object())) is None


# ----- results ------------------------------------------------------------------------------------------------------


def sample_result() -> SceneRegistrationResult:
    registration = RegistrationResult(
        sitk.Transform(), sitk.Transform(), "CT", "MR", seconds=12.34, backend="elastix",
        stage_seconds={"initialization": 3.0, "rigid": 4.5},
        metrics={"foreground_overlap": 0.91234, "initialization": {"score": 1.5, "cues": {"dice": 0.8}},
                 "cropped_sizes": {"fixed": [10, 20, 30]}, "mirrored": False},
        warnings=["something to check"],
    )
    qa = QAResult("check", ["edges disagree"], {"edge_alignment": 1.2, "restarts": {"spread_mm": 0.5},
                                                 "error_bound_mm": 7.3})
    return SceneRegistrationResult.from_registration(registration, qa=qa)


def test_result_summary_rows():
    verdict, rows = panel.result_summary(sample_result())
    table = dict(rows)
    assert verdict == "check" and rows[0] == ("verdict", "check") and table["reason"] == "edges disagree"
    assert rows[1] == ("error bound, p95 (mm)", "<= 7.3")
    assert table["quality edge_alignment"] == "1.2" and table["quality restarts spread_mm"] == "0.5"
    assert table["status"] == "ok" and table["fixed / moving modality"] == "CT / MR"
    assert table["total time (s)"] == "12.3" and table["time rigid (s)"] == "4.5"
    assert table["foreground_overlap"] == "0.9123"
    assert table["initialization cues dice"] == "0.8"
    assert table["cropped_sizes fixed"] == "10, 20, 30"
    assert table["mirrored"] == "no" and table["warning"] == "something to check"
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in rows)


def test_scene_result_json_puts_the_verdict_beside_the_status():
    report = sample_result().as_dict()
    assert list(report)[:3] == ["status", "verdict", "error_bound_mm"] and report["verdict"] == "check"
    assert report["error_bound_mm"] == 7.3 and report["qa"]["error_bound_mm"] == 7.3
    assert report["qa"]["reasons"] == ["edges disagree"]


def test_status_line_gives_the_verdict_with_its_error_bound():
    line = panel.status_line(sample_result())
    assert line.startswith("check (error bound: p95 <= 7.3 mm) in 12.3 s.") and "edges disagree" in line


def test_metrics_table_on_a_slicer_core_scene(context):
    table = context.scene.AddNewNodeByClass("vtkMRMLTableNode", "metrics")
    _, rows = panel.result_summary(sample_result())
    panel.fill_metrics_table(table, rows)
    panel.fill_metrics_table(table, rows)  # refilled, not appended
    assert table.GetNumberOfColumns() == 2 and table.GetNumberOfRows() == len(rows)
    assert table.GetColumnName(0) == "Metric" and table.GetCellText(0, 1) == "check"
    assert table.GetLocked()


def test_checkerboard_alternates_squares():
    """One checkerboard for the panel and the report: cubes of the given size, each image in its own window."""
    fixed = sitk.Image([40, 30, 20], sitk.sitkFloat32) + 0.0
    fixed.SetSpacing([2.0, 2.0, 2.0])
    fixed.SetOrigin([5.0, -3.0, 1.0])
    ramp = sitk.GetImageFromArray(np.linspace(0, 1, 40 * 30 * 20, dtype=np.float32).reshape(20, 30, 40))
    ramp.CopyInformation(fixed)
    fixed_image, moving_image = ramp, 1000.0 - 1000.0 * ramp  # different ranges, scaled to [0, 1] each
    board = checkerboard(fixed_image, moving_image, square_mm=10.0)
    assert board.GetSize() == fixed.GetSize() and board.GetOrigin() == fixed.GetOrigin()
    array = sitk.GetArrayFromImage(board)
    assert 0.0 <= array.min() and array.max() <= 1.0
    f = normalise(sitk.GetArrayFromImage(fixed_image))
    m = normalise(sitk.GetArrayFromImage(moving_image))
    assert np.isclose(array[0, 0, 0], f[0, 0, 0]) and np.isclose(array[0, 0, 4], f[0, 0, 4])
    # voxel x = 5 (10 mm) starts the next square: the source flips from fixed to moving
    assert np.isclose(array[0, 0, 5], m[0, 0, 5]) and not np.isclose(array[0, 0, 5], f[0, 0, 5])
    assert np.isclose(array[5, 0, 5], f[5, 0, 5])  # and back along z


def test_image_with_geometry_places_the_voxels(context, sample_ct):
    from CTMRRegistrationLib.mrml.nodes import ijk_to_world_lps

    node = add_volume_from_sitk(context, sample_ct, "CT")
    placed = panel.image_with_geometry(sitk_from_volume(node, world=False), ijk_to_world_lps(node))
    np.testing.assert_allclose(placed.GetOrigin(), sample_ct.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(placed.GetDirection(), sample_ct.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(placed.GetSpacing(), sample_ct.GetSpacing(), atol=1e-9)


def test_a_scene_saved_with_old_field_names_keeps_its_settings(context):
    node = context.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    for name, value in (("autoCrop", "False"), ("hardenResult", "True"), ("presetFile", "/p/Affine.txt"),
                        ("automaticInitialization", "False"), ("harden", "")):
        node.SetParameter(name, value)
    panel.carry_renamed_parameters(node)
    assert {name: node.GetParameter(name) for name in ("crop", "harden", "preset", "initialization")} == {
        "crop": "False", "harden": "True", "preset": "/p/Affine.txt", "initialization": "center"}
    assert set(node.GetParameterNames()) == {"crop", "harden", "preset", "initialization"}
    assert set(panel.RENAMED_FIELDS.values()) <= set(parameter_fields())
    panel.carry_renamed_parameters(node)  # a current scene is left as it is
    assert node.GetParameter("initialization") == "center"
