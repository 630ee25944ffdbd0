"""CT-MR Registration: a 3D Slicer scripted module. All processing lives in CTMRRegistrationLib."""

import logging

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

SAMPLE_DATA_ATTRIBUTION = (
    "Sample data: porcine phantom CT and T2 MR from the MRI-DIR collection of The Cancer Imaging Archive "
    "(doi:10.7937/K9/TCIA.2018.3f08iejt), CC BY 4.0. Ger RB et al., Synthetic head and neck and phantom images "
    "for determining deformable image registration accuracy in magnetic resonance imaging. "
    "Med Phys 45(9):4315-4321, 2018. doi:10.1002/mp.13090"
)
REQUIRED_PACKAGES = {"scipy": "scipy", "itk": "itk-elastix"}


def ensure_python_packages() -> None:
    """Install into Slicer's Python the packages the library needs that Slicer does not bundle."""
    import importlib.util

    missing = [pip_name for module, pip_name in REQUIRED_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        slicer.util.pip_install(" ".join(missing))


class CTMRRegistration(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CT-MR Registration"
        self.parent.categories = ["Registration"]
        self.parent.dependencies = ["Elastix"]
        self.parent.contributors = ["CTMRRegistration developers"]
        self.parent.helpText = (
            "One-click CT to MR registration.<br>"
            "1. Load a CT and an MR; either may be the fixed volume.<br>"
            "2. The module finds the start pose itself (any orientation, large offsets), masks table and air.<br>"
            "3. elastix refines the pose (rigid, Mattes mutual information).<br>"
            "4. The moving volume is placed under the resulting transform; nothing is resampled.<br>"
            "5. Save the transform: it is the ITK resampling transform (fixed to moving, LPS)."
        )
        self.parent.acknowledgementText = SAMPLE_DATA_ATTRIBUTION


class CTMRRegistrationWidget(ScriptedLoadableModuleWidget):
    """The module panel: pick fixed and moving volumes, press Register."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CTMRRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CTMRRegistrationLogic()
        self.ui.fixedVolumeSelector.currentNodeChanged.connect(self.updateApplyButton)
        self.ui.movingVolumeSelector.currentNodeChanged.connect(self.updateApplyButton)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.updateApplyButton()

    def updateApplyButton(self, _node=None):
        fixed = self.ui.fixedVolumeSelector.currentNode()
        moving = self.ui.movingVolumeSelector.currentNode()
        self.ui.applyButton.enabled = fixed is not None and moving is not None and fixed != moving

    def onApply(self):
        def showProgress(fraction, message):
            self.ui.statusLabel.text = f"{fraction:.0%} {message}"
            slicer.app.processEvents()

        with slicer.util.tryWithErrorDisplay("Registration failed.", waitCursor=True):
            result = self.logic.register(
                self.ui.fixedVolumeSelector.currentNode(), self.ui.movingVolumeSelector.currentNode(),
                progress=showProgress,
            )
            warnings = " ".join(result.warnings)
            self.ui.statusLabel.text = f"{result.status} in {result.seconds:.1f} s. {warnings}"


class CTMRRegistrationLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer logic over CTMRRegistrationLib.RegistrationLogic (same `register` method)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        ensure_python_packages()
        from CTMRRegistrationLib import RegistrationLogic

        self._library = RegistrationLogic()

    def register(self, fixedNode, movingNode, **options):
        """Register movingNode to fixedNode; returns a RegistrationResult with transform_node set."""
        return self._library.register(fixedNode, movingNode, **options)


class CTMRRegistrationTest(ScriptedLoadableModuleTest):
    """Self-test: the bundled pair, with the MR header moved by a known pose, is registered back."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_RecoversKnownPose()

    def test_RecoversKnownPose(self):
        from CTMRRegistrationLib import resources
        from CTMRRegistrationLib.geometry import sitk_from_volume, transform_points
        from CTMRRegistrationLib.masks import ct_body_mask

        self.delayDisplay("Loading the bundled porcine CT/MR pair")
        ct = slicer.util.loadVolume(str(resources.sample_ct_path()))
        mr = slicer.util.loadVolume(str(resources.sample_mr_path()))
        logic = CTMRRegistrationLogic()
        unmoved = logic.register(ct, mr, apply_to_moving=False)

        pose = vtk.vtkTransform()
        pose.Translate(12.0, -8.0, 10.0)
        pose.RotateX(6.0)
        pose.RotateZ(-5.0)
        poseNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "known pose")
        poseNode.SetMatrixTransformToParent(pose.GetMatrix())
        mr.SetAndObserveTransformNodeID(poseNode.GetID())
        moved = logic.register(ct, mr)

        self.delayDisplay("Comparing with the expected pose")
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
