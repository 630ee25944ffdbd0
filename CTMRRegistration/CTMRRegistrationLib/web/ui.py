"""The page of `ctmr-web`: a drawer with the Register and Cohort tabs, the three slice views beside it."""

from __future__ import annotations

from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import html
from trame.widgets import vuetify3 as v
from trame_server import Server

from .views import SliceViews

VERDICT_COLOURS = "({ok: 'green', check: 'amber', failed: 'red'})[verdict] || 'grey'"
DISPLAY_MODES = [{"title": "overlay (fixed + moving)", "value": "overlay"},
                 {"title": "checkerboard", "value": "checkerboard"},
                 {"title": "fixed only", "value": "fixed"}, {"title": "moving only", "value": "moving"}]
COHORT_HEADERS = [{"title": title, "key": key} for title, key in (
    ("case", "case"), ("status", "status"), ("verdict", "verdict"), ("bound mm", "error_bound_mm"),
    ("edges", "edge_alignment"), ("overlap", "foreground_overlap"), ("review", "review"))]


def testid(name: str) -> list[str]:
    """The attribute the browser tests find an element by."""
    return [f'data-testid="{name}"']


def _field(label: str, name: str, **kwargs) -> None:
    v.VTextField(label=label, v_model=(name, ""), density="compact", hide_details=True, classes="mb-2",
                 raw_attrs=testid(name), **kwargs)


def _register_tab(ctrl) -> None:
    _field("fixed (file or DICOM folder)", "fixed_path", disabled=("busy",))
    _field("moving (file or DICOM folder)", "moving_path", disabled=("busy",))
    with html.Div(classes="d-flex ga-2 mb-2"):
        v.VBtn("Load pair", click=ctrl.load_pair, disabled=("busy",), raw_attrs=testid("load-pair"), size="small")
        v.VBtn("Bundled sample", click=ctrl.load_sample, disabled=("busy",), raw_attrs=testid("load-sample"),
               size="small")
    html.Div("{{ pair_label }}", classes="text-caption", raw_attrs=testid("pair-label"))
    html.Div("{{ scene_nodes }} nodes in the scene", classes="text-caption mb-2", raw_attrs=testid("scene-nodes"))
    with v.VExpansionPanels(classes="mb-2"):
        with v.VExpansionPanel(title="Landmarks and segmentations (QA)"):
            with v.VExpansionPanelText():
                for role in ("fixed", "moving"):
                    _field(f"{role} landmarks (start pose)", f"{role}_landmarks", disabled=("busy",))
                for role in ("fixed", "moving"):
                    _field(f"{role} targets (TRE)", f"{role}_targets", disabled=("busy",))
                for role in ("fixed", "moving"):
                    _field(f"{role} segmentation (Dice)", f"{role}_segmentation", disabled=("busy",))
                v.VBtn("Load QA inputs", click=ctrl.load_qa, disabled=("busy || !loaded",), size="small")
    with html.Div(classes="d-flex"):
        for stage in ("rigid", "affine", "deformable"):
            v.VCheckbox(label=stage, v_model=(f"stage_{stage}", stage == "rigid"), density="compact",
                        hide_details=True, disabled=("busy",), raw_attrs=testid(f"stage-{stage}"))
    with html.Div(classes="d-flex ga-2 my-2"):
        v.VBtn("Register", color="primary", click=ctrl.register, disabled=("busy || !loaded",),
               raw_attrs=testid("register"))
        v.VBtn("Cancel", click=ctrl.cancel, disabled=("!busy",), raw_attrs=testid("cancel"))
    v.VProgressLinear(model_value=("progress", 0), height=14, color="primary", raw_attrs=testid("progress"))
    html.Div("{{ progress_text }}", classes="text-caption", raw_attrs=testid("progress-text"))
    with html.Div(v_if="verdict", classes="my-2", raw_attrs=testid("result")):
        v.VChip("{{ verdict }}", color=(VERDICT_COLOURS,), raw_attrs=testid("verdict"), variant="flat")
        html.Span(" error bound p95 \u2264 {{ error_bound_mm }} mm", v_if="error_bound_mm !== null",
                  raw_attrs=testid("error-bound"))
        html.Div("{{ status_line }}", classes="text-caption", raw_attrs=testid("status-line"))
        with html.Ul(classes="text-caption ml-4"):
            html.Li("{{ reason }}", v_for="reason in reasons", key="reason")
        with v.VTable(density="compact", height="220px", fixed_header=True, raw_attrs=testid("metrics")):
            with html.Tbody():
                with html.Tr(v_for="row in metrics", key="row[0]"):
                    html.Td("{{ row[0] }}", classes="text-caption")
                    html.Td("{{ row[1] }}", classes="text-caption")
    _field("output folder", "output_folder", disabled=("busy",))
    v.VCheckbox(label="export a DICOM REG even if the verdict is failed", v_model=("allow_failed", False),
                density="compact", hide_details=True)
    with html.Div(classes="d-flex flex-wrap ga-2 mb-2"):
        for label, handler, name in (("Transform", ctrl.save_transform, "save-transform"),
                                     ("Resampled volume", ctrl.save_volume, "save-volume"),
                                     ("DICOM REG", ctrl.save_dicom_reg, "save-dicom-reg")):
            v.VBtn(label, click=handler, size="small", disabled=("busy || !verdict",), raw_attrs=testid(name),
                   prepend_icon="mdi-content-save")
    html.Div("report: {{ report_path }}", v_if="report_path", classes="text-caption", raw_attrs=testid("report-path"))


def _cohort_tab(ctrl) -> None:
    _field("ctmr-batch output folder", "cohort_path", disabled=("busy",))
    v.VBtn("Open cohort", click=ctrl.open_cohort, size="small", disabled=("busy",), raw_attrs=testid("open-cohort"),
           classes="mb-2")
    with v.VDataTable(headers=("cohort_headers", COHORT_HEADERS), items=("cohort_rows", []), density="compact",
                      items_per_page=-1, hide_default_footer=True, height="300px", fixed_header=True,
                      raw_attrs=testid("cohort-table")):
        with v.Template(raw_attrs=['v-slot:item.case="{ item }"']):
            html.A("{{ item.case }}", click=(ctrl.select_case, "[item.case]"), href="#",
                   raw_attrs=testid("case-link"))
    with html.Div(v_if="case_name", classes="my-2", raw_attrs=testid("case-panel")):
        html.Div("case {{ case_name }} ({{ case_position }})", classes="text-subtitle-2", raw_attrs=testid("case-name"))
        v.VChip("{{ verdict || case_status }}", color=(VERDICT_COLOURS,), variant="flat", size="small")
        html.Div("{{ status_line }}", classes="text-caption")
        v.VTextField(label="comment", v_model=("review_comment", ""), density="compact", hide_details=True,
                     classes="my-2", raw_attrs=testid("review-comment"))
        with html.Div(classes="d-flex ga-2"):
            v.VBtn("Accept", color="green", click=(ctrl.review, "['accept']"), size="small", raw_attrs=testid("accept"))
            v.VBtn("Reject", color="red", click=(ctrl.review, "['reject']"), size="small", raw_attrs=testid("reject"))
            v.VBtn("Previous", click=(ctrl.step_case, "[-1]"), size="small", raw_attrs=testid("previous-case"))
            v.VBtn("Next", click=(ctrl.step_case, "[1]"), size="small", raw_attrs=testid("next-case"))


def build(server: Server, views: SliceViews) -> SinglePageWithDrawerLayout:
    """The page; the handlers are the server controller's (app.py binds them)."""
    ctrl = server.controller
    with SinglePageWithDrawerLayout(server, width=430) as layout:
        layout.title.set_text("CT-MR registration")
        layout.footer.hide()
        with layout.toolbar:
            v.VSpacer()
            html.Div("{{ message }}", classes="text-body-2 mx-4", raw_attrs=testid("message"),
                     style=("{color: message_error ? '#ff8a80' : 'inherit'}",))
            v.VSelect(items=("display_modes", DISPLAY_MODES), v_model=("display_mode", "overlay"),
                      density="compact", hide_details=True, style="max-width: 230px", raw_attrs=testid("display-mode"),
                      disabled=("busy",))
            v.VSlider(v_model=("opacity", 0.5), min=0, max=1, step=0.05, density="compact", hide_details=True,
                      style="max-width: 160px", classes="mx-2", label="opacity", raw_attrs=testid("opacity"),
                      disabled=("busy",))
            v.VBtn(icon="mdi-fit-to-screen", click=ctrl.fit_views, variant="text", raw_attrs=testid("fit"))
        with layout.drawer:
            with v.VTabs(v_model=("tab", "register"), density="compact", grow=True):
                v.VTab("Register", value="register", raw_attrs=testid("tab-register"))
                v.VTab("Cohort review", value="cohort", raw_attrs=testid("tab-cohort"))
            with html.Div(classes="pa-3"):
                with html.Div(v_show="tab === 'register'"):
                    _register_tab(ctrl)
                with html.Div(v_show="tab === 'cohort'"):
                    _cohort_tab(ctrl)
        with layout.content:
            with html.Div(style="height: 100%; display: flex", raw_attrs=testid("views")):
                views.layout.initialize_layout_grid(layout)
    return layout
