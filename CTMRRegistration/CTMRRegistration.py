"""CT-MR Registration: a 3D Slicer scripted module.

All processing lives in CTMRRegistrationLib, which also runs without the Slicer application (on a slicer-core
MRML scene). The panel's actions are CTMRRegistrationLib.apps.panel (Qt-free, tested headless on real MRML);
this file only wires them to Qt.
"""

import dataclasses
import hashlib
import logging
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import qt
import SimpleITK as sitk
import slicer
import vtk

# The library needs Python 3.10 (Slicer 5.10 ships 3.12, Slicer 5.8 ships 3.9): say so before importing it.
MINIMUM_SLICER_VERSION = (5, 10)
if (slicer.app.majorVersion, slicer.app.minorVersion) < MINIMUM_SLICER_VERSION:
    raise RuntimeError(f"CT-MR Registration needs 3D Slicer {'.'.join(map(str, MINIMUM_SLICER_VERSION))} or newer; "
                       f"this is Slicer {slicer.app.majorVersion}.{slicer.app.minorVersion}.")

from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin  # noqa: E402

from CTMRRegistrationLib import Cancelled, CTMRError, RegistrationLogic  # noqa: E402
from CTMRRegistrationLib.apps.panel import Panel, PanelSettings, apply_problem, carry_renamed_parameters, status_line  # noqa: E402, E501
from CTMRRegistrationLib.core import resources  # noqa: E402
from CTMRRegistrationLib.mrml.nodes import sitk_from_volume  # noqa: E402
from CTMRRegistrationLib.qa.report import REPORT_NAME  # noqa: E402

SAMPLE_DATA_ATTRIBUTION = (
    "Sample data: porcine phantom CT and T2 MR from the MRI-DIR collection of The Cancer Imaging Archive "
    "(doi:10.7937/K9/TCIA.2018.3f08iejt), CC BY 4.0. Ger RB et al., Synthetic head and neck and phantom images "
    "for determining deformable image registration accuracy in magnetic resonance imaging. "
    "Med Phys 45(9):4315-4321, 2018. doi:10.1002/mp.13090"
)
SAMPLE_CATEGORY = "CT-MR Registration"
SAMPLE_NAME = "Porcine CT and MR"
SAMPLE_NODE_NAMES = ("PorcineCT", "PorcineMR")

#
# CTMRRegistration
#


class CTMRRegistration(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CT-MR Registration"
        self.parent.categories = ["Registration"]
        self.parent.dependencies = ["Elastix"]  # SlicerElastix's elastix runs the registration
        self.parent.contributors = ["CTMRRegistration developers"]
        self.parent.helpText = (
            "Automatic CT to MR registration.<br>"
            "1. Choose the fixed and the moving volume; either may be the CT (try Sample Data: Porcine CT and MR).<br>"
            "2. The start pose is found automatically (any orientation, large offsets); table and air are masked.<br>"
            "3. elastix refines it: rigid, then optionally affine and deformable.<br>"
            "4. The moving volume is placed under the result transform (Harden to resample it).<br>"
            "5. Check the verdict and metrics, the overlay and the checkerboard; the report folder keeps them."
        )
        self.parent.acknowledgementText = SAMPLE_DATA_ATTRIBUTION
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data: the bundled pair, loaded from the module's Resources (no download)
#


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def registerSampleData() -> None:
    """Add the bundled porcine CT/MR pair to the Sample Data module: one click loads both and opens this
    module with them selected; the second click is Register."""
    import SampleData

    paths = (resources.sample_ct_path(), resources.sample_mr_path())
    if hasattr(SampleData.SampleDataLogic, "registerCustomSampleDataCategory"):  # Slicer 5.12: a titled category
        SampleData.SampleDataLogic.registerCustomSampleDataCategory(SAMPLE_CATEGORY, SAMPLE_CATEGORY)
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(resources.resources_dir() / "Icons" / "CTMRRegistrationSampleData.png"),
        uris=[path.as_uri() for path in paths],
        fileNames=[path.name for path in paths],
        nodeNames=list(SAMPLE_NODE_NAMES),
        checksums=[f"SHA256:{_sha256(path)}" for path in paths],
        customDownloader=loadSamplePair,
    )


def loadSamplePair(source=None):
    """Load the bundled pair (CT fixed, MR moving) and open this module with both selected."""
    import SampleData

    logic = SampleData.SampleDataLogic()
    ct, mr = logic.downloadFromSource(source or logic.sourceForSampleName(SAMPLE_NAME))
    parameterNode = CTMRRegistrationLogic().getParameterNode()
    parameterNode.fixedVolume, parameterNode.movingVolume = ct, mr
    if slicer.util.mainWindow():
        slicer.util.selectModule("CTMRRegistration")
    return [ct, mr]


#
# CTMRRegistrationParameterNode
#


def parameterNodeClass(settings: type = PanelSettings) -> type:
    """The parameter node's class: the fields of CTMRRegistrationLib.apps.panel.PanelSettings, each widget of
    the .ui file naming its field by its SlicerParameterName property."""
    hints = typing.get_type_hints(settings)
    annotations, defaults = {}, {}
    for field in dataclasses.fields(settings):
        kind = next((arg for arg in typing.get_args(hints[field.name]) if arg is not type(None)), hints[field.name])
        choices = field.metadata.get("choices")
        annotations[field.name] = Annotated[kind, Choice(list(choices))] if choices else kind
        if kind in (bool, str):
            defaults[field.name] = field.default
    return type("CTMRRegistrationParameterNode", (), {"__annotations__": annotations, **defaults,
                                                      "__doc__": settings.__doc__})


CTMRRegistrationParameterNode = parameterNodeWrapper(parameterNodeClass())


#
# CTMRRegistrationWidget
#


class CTMRRegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, options, outputs, Register/Cancel with progress, and the result buttons."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.panel = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._running = False
        self._cancelRequested = False
        self.messageBoxes = True  # the self-test turns them off: a test never waits for a click

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CTMRRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CTMRRegistrationLogic()
        self.panel = Panel(self.logic)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.showOverlayButton.connect("clicked(bool)", self.onShowOverlay)
        self.ui.showCheckerboardButton.connect("clicked(bool)", self.onShowCheckerboard)
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReport)
        self.ui.cropVolumesButton.connect("clicked(bool)", self.onCropVolumes)
        self.ui.exportDicomRegButton.connect("clicked(bool)", self.onExportDicomReg)
        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.panel = Panel(self.logic)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Observe the scene's parameter node; select the first two volumes when nothing is selected."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixedVolume and not self._parameterNode.movingVolume:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            volumes = [volume for volume in volumes if not volume.IsA("vtkMRMLLabelMapVolumeNode")]
            if len(volumes) >= 2:
                self._parameterNode.fixedVolume, self._parameterNode.movingVolume = volumes[:2]

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # The .ui file's SlicerParameterName properties name the field each widget shows.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        problem = apply_problem(p) if p is not None else "No parameter node."
        self.ui.applyButton.enabled = problem is None and not self._running
        self.ui.applyButton.toolTip = problem or "Register the moving volume to the fixed volume."
        self.ui.metricsTableView.setMRMLTableNode(p.metricsTable if p else None)
        self.ui.showOverlayButton.enabled = bool(p and p.fixedVolume and p.movingVolume)
        self.ui.showCheckerboardButton.enabled = bool(p) and self.panel.can_show_checkerboard(p) and not self._running
        self.ui.exportDicomRegButton.enabled = self.ui.showCheckerboardButton.enabled
        self.ui.openReportButton.enabled = bool(p) and self.panel.report_target(p) is not None
        self.ui.cropVolumesButton.enabled = bool(p and p.fixedVolume and p.movingVolume
                                                 and (p.cropRoi or p.registeredRegion)) and not self._running

    def _setRunning(self, running: bool) -> None:
        self._running = running
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.setVisible(running)
        self.ui.progressBar.value = 0
        self._updateButtons()

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # draws the progress and lets Cancel be clicked

    def onCancelButton(self) -> None:
        self._cancelRequested = True
        self.ui.cancelButton.enabled = False
        self.ui.statusLabel.text = "Cancelling..."

    def showMessage(self, text: str, warning: bool = False) -> None:
        """A message in the status line and the log, and in a message box unless the self-test runs."""
        self.ui.statusLabel.text = text
        (logging.warning if warning else logging.error)(text)
        if self.messageBoxes:
            (slicer.util.warningDisplay if warning else slicer.util.errorDisplay)(text)

    def askUser(self, text: str) -> bool:
        """The user's OK to `text` (a message box); False while the self-test runs."""
        return self.messageBoxes and slicer.util.confirmOkCancelDisplay(text)

    @contextmanager
    def showErrors(self, what: str):
        """Show an error in one line: the library's messages say what is wrong and what to do. An unexpected
        error's traceback goes to the application log, not to the user."""
        try:
            yield
        except CTMRError as error:
            self.showMessage(f"{what}: {error}")
        except Exception as error:
            logging.exception(what)
            self.showMessage(f"{what}: {error} (the application log has the details)")

    def onApplyButton(self) -> None:
        """Register with progress and Cancel. After an error or a cancel the scene is as it was."""
        p = self._parameterNode
        if apply_problem(p) is not None:
            return
        self._cancelRequested = False
        self._setRunning(True)
        result = None
        try:
            with self.showErrors("Registration failed"), slicer.util.NodeModify(p):
                try:
                    result = self.panel.register(p, progress=self._onProgress,
                                                 cancelled=lambda: self._cancelRequested)
                except Cancelled:
                    self.ui.statusLabel.text = "Cancelled: nothing was changed."
        finally:
            self._setRunning(False)
        if result is None:
            if not self._cancelRequested:
                self.ui.statusLabel.text += " Nothing was changed."
            return
        self.ui.statusLabel.text = status_line(result)
        self._updateButtons()
        if result.status == "mirrored":
            self.showMessage(
                "The moving volume appears mirrored (a left-right flip in its header?), so it was not registered. "
                "Fix the header, or tick 'Register a mirrored moving volume anyway' under Options, Advanced.",
                warning=True)
            return
        self.onShowOverlay()

    def onShowOverlay(self) -> None:
        """Fixed volume in the background, moving volume (as transformed) in the foreground at 50 %."""
        p = self._parameterNode
        slicer.util.setSliceViewerLayers(background=p.fixedVolume, foreground=p.movingVolume,
                                         foregroundOpacity=0.5, fit=True)

    def onShowCheckerboard(self) -> None:
        """A volume of alternating fixed and registered moving squares on the fixed grid."""
        with self.showErrors("Cannot show the checkerboard"):
            slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
            try:
                board = self.panel.show_checkerboard()
            finally:
                slicer.app.restoreOverrideCursor()
            slicer.util.setSliceViewerLayers(background=board, foreground=None, fit=True)

    def onCropVolumes(self) -> None:
        """Cropped copies of both volumes inside the crop region (else the registered region)."""
        with self.showErrors("Cannot crop the volumes"):
            fixedCropped, movingCropped = self.panel.crop_volumes(self._parameterNode)
            slicer.util.setSliceViewerLayers(background=fixedCropped, foreground=movingCropped,
                                             foregroundOpacity=0.5, fit=True)

    def onExportDicomReg(self) -> None:
        """The last result as a DICOM Spatial Registration object (volumes loaded from DICOM only)."""
        allowFailed = self.panel.export_needs_confirmation() and self.askUser(
            "The quality verdict of this result is failed. A planning system would import the DICOM REG as it is. "
            "Write it anyway (its description will say that the verdict is failed)?")
        with self.showErrors("Cannot export the DICOM REG"):
            path = self.panel.export_dicom_registration(self._parameterNode, allow_failed=allowFailed)
            self.ui.statusLabel.text = f"Wrote {path}"

    def onOpenReport(self) -> None:
        target = self.panel.report_target(self._parameterNode)
        if target is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(target)))


#
# CTMRRegistrationLogic
#


class CTMRRegistrationLogic(ScriptedLoadableModuleLogic, RegistrationLogic):
    """The library's RegistrationLogic on Slicer's scene, plus the module's parameter node.

    `register(fixedNode, movingNode, ...)` is RegistrationLogic.register: the same call runs headless
    on a slicer-core scene (`RegistrationLogic(create_headless_context())`), so console scripts run unchanged.
    """

    def __init__(self) -> None:
        # ScriptedLoadableModuleLogic.__init__ calls super().__init__(), which here is RegistrationLogic's:
        # it takes slicer.mrmlScene and the application's module logics (CTMRRegistrationLib.default_context).
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> CTMRRegistrationParameterNode:
        node = super().getParameterNode()
        carry_renamed_parameters(node)  # a scene saved with the fields' old names keeps its settings
        return CTMRRegistrationParameterNode(node)


#
# CTMRRegistrationTest
#


class CTMRRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test in Slicer: the bundled pair from Sample Data, a known pose recovered through the logic, and
    the panel's Register, Cancel and error paths. It needs no main window and opens no message box, so CTest
    and Testing/run_in_slicer.sh run it unattended."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_SampleDataLoadsThePair, self.test_RecoversKnownPose, self.test_PanelRegisters,
                     self.test_PanelLeavesTheSceneUnchangedAfterErrorOrCancel):
            self.setUp()
            test()

    def loadPair(self):
        """The pair as a user's click on the Sample Data button loads it: through the source's customDownloader."""
        registerSampleData()
        return loadSamplePair()

    def test_SampleDataLoadsThePair(self):
        import SampleData

        self.delayDisplay("Loading the bundled pair as the Sample Data button does (customDownloader)")
        clicked = self.loadPair()
        self.assertEqual([node.GetName() for node in clicked], list(SAMPLE_NODE_NAMES))
        if slicer.util.mainWindow():
            self.assertEqual(slicer.util.selectedModule(), "CTMRRegistration")
        parameterNode = CTMRRegistrationLogic().getParameterNode()
        self.assertEqual((parameterNode.fixedVolume, parameterNode.movingVolume), tuple(clicked))
        self.delayDisplay("Loading it through SampleData.downloadSamples (scripts)")
        slicer.mrmlScene.Clear()
        scripted = SampleData.downloadSamples(SAMPLE_NAME)
        for node in list(clicked) + list(scripted):
            self.assertGreater(node.GetImageData().GetNumberOfPoints(), 0)
        self.delayDisplay("Test passed")

    def test_RecoversKnownPose(self):
        """The MR header moved by a known rigid pose: the result must be the unmoved result composed with
        the pose, within 1 mm (95th percentile over the CT object), the criterion of the headless tests."""
        from CTMRRegistrationLib.core.geometry import transform_points
        from CTMRRegistrationLib.core.masks import ct_body_mask

        ct, mr = self.loadPair()
        logic = CTMRRegistrationLogic()
        self.delayDisplay("Registering the unmoved pair")
        unmoved = logic.register(ct, mr, apply_to_moving=False)
        self.assertEqual(unmoved.status, "ok")

        pose = vtk.vtkTransform()
        pose.Translate(12.0, -8.0, 10.0)
        pose.RotateX(6.0)
        pose.RotateZ(-5.0)
        poseNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "known pose")
        poseNode.SetMatrixTransformToParent(pose.GetMatrix())
        mr.SetAndObserveTransformNodeID(poseNode.GetID())
        self.delayDisplay("Registering the MR moved by a known pose")
        moved = logic.register(ct, mr)
        self.assertEqual(moved.status, "ok")
        self.assertEqual(moved.verdict, "ok")
        # The result is a world-space transform placed on top of the moving volume's existing chain.
        self.assertIs(mr.GetParentTransformNode(), poseNode)
        self.assertIs(poseNode.GetParentTransformNode(), moved.transform_node)

        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        poseLps = flip @ slicer.util.arrayFromVTKMatrix(pose.GetMatrix()) @ flip
        expected = poseLps @ unmoved.matrix
        ctImage = sitk_from_volume(ct)
        voxels = np.argwhere(sitk.GetArrayFromImage(ct_body_mask(ctImage)) > 0)[::50, ::-1].astype(float)
        points = np.array([ctImage.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])
        errors = np.linalg.norm(transform_points(moved.matrix, points) - transform_points(expected, points), axis=1)
        logging.info(f"known pose recovered: p95 error {np.percentile(errors, 95):.2f} mm")
        self.assertLess(np.percentile(errors, 95), 1.0)
        self.delayDisplay("Test passed")

    def panel(self):
        """The module's widget (made without a main window if there is none), its message boxes off."""
        widget = slicer.modules.ctmrregistration.widgetRepresentation().self()
        widget.messageBoxes = False
        widget.initializeParameterNode()
        return widget, widget._parameterNode

    def test_PanelRegisters(self):
        import tempfile

        ct, mr = self.loadPair()
        widget, p = self.panel()
        p.fixedVolume, p.movingVolume = ct, mr
        with tempfile.TemporaryDirectory() as folder:
            p.reportFolder = Path(folder)
            self.delayDisplay("Register from the panel")
            widget.onApplyButton()
            self.assertEqual(p.verdict, "ok")
            self.assertIsNotNone(p.outputTransform)
            self.assertIs(mr.GetParentTransformNode(), p.outputTransform)
            self.assertGreater(p.metricsTable.GetNumberOfRows(), 3)
            self.assertIn(">ok<", (Path(folder) / REPORT_NAME).read_text())
            p.reportFolder = Path()
        firstTransform = p.outputTransform

        self.delayDisplay("Register again: the same transform node is reused, not stacked")
        widget.onApplyButton()
        self.assertIs(p.outputTransform, firstTransform)
        self.assertIs(mr.GetParentTransformNode(), firstTransform)
        self.assertIsNone(firstTransform.GetParentTransformNode())

        widget.onShowCheckerboard()
        board = widget.panel.checkerboard_node
        self.assertIsNotNone(board)
        self.assertEqual(board.GetImageData().GetDimensions(), ct.GetImageData().GetDimensions())
        self.delayDisplay("Test passed")

    def test_PanelLeavesTheSceneUnchangedAfterErrorOrCancel(self):
        ct, mr = self.loadPair()
        widget, p = self.panel()
        p.fixedVolume, p.movingVolume = ct, mr
        nodes, verdict = slicer.mrmlScene.GetNumberOfNodes(), p.verdict

        self.delayDisplay("An unusable preset file: a message, no change")
        p.preset = resources.sample_data_dir() / "README.md"
        widget.onApplyButton()
        p.preset = Path()
        self.assertIn("README.md", widget.ui.statusLabel.text)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.assertIsNone(mr.GetParentTransformNode())
        self.assertEqual(p.verdict, verdict)

        self.delayDisplay("Cancel at the first progress report: no change")
        qt.QTimer.singleShot(0, widget.ui.cancelButton.click)
        widget.onApplyButton()
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.assertIsNone(mr.GetParentTransformNode())
        self.assertTrue(widget.ui.progressBar.isHidden())
        self.assertTrue(widget.ui.applyButton.enabled)
        self.delayDisplay("Test passed")
