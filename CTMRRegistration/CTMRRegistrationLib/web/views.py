"""The three linked slice views (axial, coronal, sagittal) of the scene, rendered by Slicer's own MRML slice views
(trame-slicer) offscreen and streamed to the page.

No 3-D view: volume rendering costs seconds a frame on a few CPU cores.
"""

from __future__ import annotations

from slicer import vtkMRMLCrosshairNode, vtkMRMLSliceNode
from trame_server import Server
from trame_slicer.core import LayoutManager, ViewManager
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, SliceView, ViewLayoutDefinition
from vtkmodules.vtkCommonCore import vtkCollection

from ..mrml.scene import MRMLContext

LAYOUT_ID = "ctmr axial coronal sagittal"


def prepare_scene(context: MRMLContext) -> None:
    """Give a headless context what slice views need (the Slicer application sets these up)."""
    logic = context.application_logic
    logic.SetSliceLogics(vtkCollection())
    logic.SetViewLogics(vtkCollection())
    crosshair = vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    context.scene.AddNode(crosshair)
    vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(context.scene, True)


def outline_regions(scene) -> None:
    """Show regions (the registered region's ROI) as outlines without handles: a filled box hides the images."""
    regions = scene.GetNodesByClass("vtkMRMLMarkupsROINode")
    for index in range(regions.GetNumberOfItems()):
        display = regions.GetItemAsObject(index).GetDisplayNode()
        if display is not None:
            display.SetFillVisibility(False)
            display.SetHandlesInteractive(False)


class SliceViews:
    """The linked views of the layout: what they show (background, foreground and its opacity)."""

    def __init__(self, server: Server, context: MRMLContext):
        prepare_scene(context)
        self.scene = context.scene
        self.manager = ViewManager(context.scene, context.application_logic)
        register_rca_factories(self.manager, server, slice_view_ui_f=lambda *_: None)  # no stock gutter widgets
        self.layout = LayoutManager(context.scene, self.manager, server)
        views = [ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view(),
                 ViewLayoutDefinition.sagittal_view()]
        self.layout.register_layout(LAYOUT_ID, Layout(LayoutDirection.Horizontal, views))
        self.layout.set_layout(LAYOUT_ID)

    def views(self) -> list[SliceView]:
        return self.manager.get_slice_views()

    def show(self, background: str | None, foreground: str | None, opacity: float) -> None:
        """Show volume node IDs `background` and `foreground` (None: nothing) in every view, fitted."""
        outline_regions(self.scene)
        for view in self.views():
            view.set_background_volume_id(background)
            view.set_foreground_volume_id(foreground)
            view.set_foreground_opacity(opacity)
            view.fit_view_to_content()
            view.schedule_render()

    def set_opacity(self, opacity: float) -> None:
        for view in self.views():
            view.set_foreground_opacity(opacity)
            view.schedule_render()

    def fit(self) -> None:
        for view in self.views():
            view.fit_view_to_content()
            view.schedule_render()

    def pause(self) -> None:
        """No rendering until `resume`: a background job changes the scene (MRML is not thread-safe)."""
        for view in self.views():
            view.set_render_blocked(True)

    def resume(self) -> None:
        for view in self.views():
            view.set_render_blocked(False)
