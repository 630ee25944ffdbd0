"""`ctmr-web`: serve the registration panel and cohort review to a browser on this machine.

    ctmr-web [--data-root DIR ...] [--host 127.0.0.1] [--port 8080] [--reviewer NAME]

Paths typed in the page must lie in a --data-root folder (default: the current folder); the bundled sample pair
is always there to load. It binds to loopback; another --host serves the network without any authentication.
Every browser tab shows the one session of the server (one scene, one job at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

from ..core import resources
from ..core.errors import Cancelled, CTMRError, InputError
from .roots import DataRoots

LOOPBACK = ("127.0.0.1", "localhost", "::1")
FAVICON = ("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect width='16' "
           "height='16' fill='%23d81b60'/%3E%3Crect x='8' width='8' height='16' fill='%2343a047'/%3E%3C/svg%3E")
MISSING = ('ctmr-web needs the web extra: pip install "ctmr-registration[web]" && '
           'pip install --no-deps "slicer-layer-dm>=2,<3"')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctmr-web", description="CT-MR registration and cohort review in a browser.")
    parser.add_argument("--data-root", type=Path, action="append", default=[],
                        help="folder whose files the page may open and write (repeat; default: the current folder)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: any free port)")
    parser.add_argument("--reviewer", default=getpass.getuser(), help="name recorded with cohort reviews")
    return parser


class WebApp:
    """The server's one session: the scene, its views, the background job and the page's handlers."""

    def __init__(self, server, roots: DataRoots, reviewer: str):
        from ..mrml.scene import create_headless_context
        from . import ui
        from .session import RegistrationSession
        from .views import SliceViews

        self.server, self.roots, self.reviewer = server, roots, reviewer
        self.state = server.state
        context = create_headless_context()
        self.views = SliceViews(server, context)
        self.session = RegistrationSession(context)
        self.session.keep_current_nodes()
        self.runner = None
        self.cohort = None
        self.cases: list[str] = []
        self._initial_state()
        for name in ("load_pair", "load_sample", "load_qa", "register", "cancel", "save_transform", "save_volume",
                     "save_dicom_reg", "fit_views", "open_cohort", "select_case", "step_case", "review"):
            setattr(server.controller, name, self._guarded(getattr(self, name)))
        self.state.change("display_mode")(lambda **_: self._show())
        self.state.change("opacity")(lambda opacity, **_: self.views.set_opacity(float(opacity)))
        ui.build(server, self.views)

    def _initial_state(self) -> None:
        self.state.update({
            "trame__title": "ctmr-web", "trame__favicon": FAVICON, "busy": False, "loaded": False,
            "pair_label": "no pair loaded", "message": "", "message_error": False, "progress": 0,
            "progress_text": "", "output_folder": str(self.roots.folders[0] / "ctmr-web-output"),
            "scene_nodes": 0, "cohort_rows": [], "case_name": "", "case_position": "", "case_status": "",
        })
        self._clear_result()

    def _clear_result(self) -> None:
        self.state.update({"verdict": "", "error_bound_mm": None, "status_line": "", "reasons": [], "metrics": [],
                           "report_path": ""})

    def _say(self, text: str, error: bool = False) -> None:
        self.state.message, self.state.message_error = text, error

    def _guarded(self, handler):
        """A handler that reports a CTMRError on the page, and refuses to touch the scene while a job runs."""
        def run(*args):
            if self.state.busy and handler.__name__ not in ("cancel", "fit_views"):
                return self._say("A registration is running: wait for it or cancel it.", True)
            try:
                handler(*args)
            except CTMRError as error:
                self._say(str(error).splitlines()[0], True)
            self.state.scene_nodes = self.session.context.scene.GetNumberOfNodes()
        return run

    def _show(self) -> None:
        """The pair in the views as the display mode asks: overlay, checkerboard, fixed or moving alone."""
        settings = self.session.settings
        if not settings.fixedVolume:
            return self.views.show(None, None, 0.0)
        fixed, moving = settings.fixedVolume.GetID(), settings.movingVolume.GetID()
        mode, opacity = self.state.display_mode, float(self.state.opacity)
        if mode == "checkerboard":
            if not self.session.panel.can_show_checkerboard(settings):
                self.state.display_mode = "overlay"
                return self._say("The checkerboard needs a registration of this pair: register first.", True)
            return self.views.show(self.session.panel.show_checkerboard().GetID(), None, 0.0)
        background, foreground = {"fixed": (fixed, None), "moving": (moving, None)}.get(mode, (fixed, moving))
        self.views.show(background, foreground, opacity)

    def _loaded(self, fixed_name: str, moving_name: str) -> None:
        self.state.loaded = True
        self.state.pair_label = f"fixed {fixed_name}, moving {moving_name}"
        self._clear_result()
        self._show()

    # The register tab

    def load_pair(self) -> None:
        fixed = self.roots.resolve(self.state.fixed_path, "fixed")
        moving = self.roots.resolve(self.state.moving_path, "moving")
        self.session.load_pair(fixed, moving)
        self._loaded(fixed.name, moving.name)
        self._say("Pair loaded.")

    def load_sample(self) -> None:
        self.session.load_pair(resources.sample_ct_path(), resources.sample_mr_path())
        self._loaded("porcine CT (bundled)", "porcine T2 MR (bundled)")
        self._say("Bundled sample pair loaded.")

    def load_qa(self) -> None:
        from .session import QaFiles

        files = QaFiles(**{f"{role}_{kind}": self.roots.optional(self.state[f"{role}_{kind}"], f"{role} {kind}")
                           for role in ("fixed", "moving") for kind in ("landmarks", "targets", "segmentation")})
        loaded = self.session.load_qa(files)
        self._say(f"Loaded: {', '.join(loaded)}." if loaded else "No QA inputs given.")

    def register(self) -> None:
        from .jobs import JobRunner

        stages = tuple(stage for stage in ("rigid", "affine", "deformable") if self.state[f"stage_{stage}"])
        output = self.roots.resolve(self.state.output_folder, "output folder")
        if self.runner is None:
            self.runner = JobRunner(asyncio.get_running_loop())
        self.views.pause()
        self.state.update({"busy": True, "progress": 0, "progress_text": "starting"})
        self._say("Registering...")
        self.runner.start(lambda progress, cancelled: self.session.register(stages, output, progress, cancelled),
                          self._progress, self._registered)

    def _progress(self, fraction: float, message: str) -> None:
        with self.state:
            self.state.progress, self.state.progress_text = round(100 * fraction), message

    def _registered(self, result, error: BaseException | None) -> None:
        with self.state:
            self.state.busy = False
            self.views.resume()
            if isinstance(error, Cancelled):
                self.state.progress_text = "cancelled"
                self._say("Cancelled: the scene is as it was.")
            elif error is not None:
                self.state.progress_text = "stopped"
                self._say(f"Registration failed: {(str(error).splitlines() or [type(error).__name__])[0]}", True)
            else:
                self.state.progress = 100
                self._say("Registered.")
            self._show_summary()
            self._show()
            self.state.scene_nodes = self.session.context.scene.GetNumberOfNodes()

    def _show_summary(self) -> None:
        """The last result of the pair (unchanged by a cancel or a failure), or none."""
        summary = self.session.summary()
        if summary is None:
            return self._clear_result()
        report = self.session.report_path()
        self.state.update({"verdict": summary.verdict, "error_bound_mm": summary.error_bound_mm,
                           "status_line": summary.status_line, "reasons": summary.reasons,
                           "metrics": [list(row) for row in summary.rows], "report_path": str(report or "")})

    def cancel(self) -> None:
        if self.runner is not None and self.runner.running:
            self.runner.cancel()
            self.state.progress_text = "cancelling..."

    def _output(self) -> Path:
        return self.roots.resolve(self.state.output_folder, "output folder")

    def save_transform(self) -> None:
        self._say(f"Saved {self.session.save_transform(self._output())}")

    def save_volume(self) -> None:
        self._say(f"Saved {self.session.save_volume(self._output())}")

    def save_dicom_reg(self) -> None:
        self._say(f"Saved {self.session.save_dicom_reg(self._output(), bool(self.state.allow_failed))}")

    def fit_views(self) -> None:
        self.views.fit()

    # The cohort tab

    def open_cohort(self) -> None:
        from .cohort import Cohort

        self.cohort = Cohort(self.roots.resolve(self.state.cohort_path, "cohort folder"))
        self._refresh_cohort()
        self._say(f"Cohort of {len(self.cases)} cases: the ones to look at first are on top.")
        if self.cases:
            self.select_case(self.cases[0])

    def _refresh_cohort(self) -> None:
        from .cohort import KEY_METRICS

        rows = self.cohort.rows()
        self.cases = [row["case"] for row in rows]
        columns = ("case", "status", "verdict", "review", "comment", *KEY_METRICS)
        self.state.cohort_rows = [{column: row.get(column, "") for column in columns} for row in rows]

    def select_case(self, case: str) -> None:
        """Show a case: its inputs through its transform, its verdict and reasons, its review so far."""
        record = self.cohort.record(case)
        self.state.update({"case_name": case, "case_status": record.get("status", ""),
                           "case_position": f"{self.cases.index(case) + 1} of {len(self.cases)}"})
        self._clear_result()
        row = next((row for row in self.state.cohort_rows if row["case"] == case), {})
        self.state.review_comment = row.get("comment", "")
        metrics = record.get("metrics") or {}
        self.state.update({"verdict": record.get("verdict", ""), "error_bound_mm": metrics.get("error_bound_mm"),
                           "reasons": record.get("reasons") or [],
                           "status_line": record.get("error") or "; ".join(record.get("reasons") or []),
                           "metrics": [[key, str(value)] for key, value in metrics.items()],
                           "report_path": str(self.cohort.report(case) or "")})
        fixed, moving = self.cohort.inputs(case)
        self.session.load_pair(self.roots.resolve(str(fixed), "case fixed input"),
                               self.roots.resolve(str(moving), "case moving input"))
        transform = self.cohort.transform(case)
        if transform is not None:
            self.session.apply_transform_file(transform)
        self.state.loaded = True
        self.state.pair_label = f"case {case}: fixed {fixed.name}, moving {moving.name}"
        self._show()

    def step_case(self, step: int) -> None:
        if not self.cases:
            raise InputError("Open a cohort first.")
        index = self.cases.index(self.state.case_name) if self.state.case_name in self.cases else -1
        self.select_case(self.cases[(index + step) % len(self.cases)])

    def review(self, decision: str) -> None:
        """Record the mark of the case shown, then show the next case."""
        from .cohort import ReviewStore

        case = self.state.case_name
        if not case:
            raise InputError("Choose a case first.")
        ReviewStore(self.cohort.folder).mark(case, decision, self.state.review_comment or "", self.reviewer)
        self._refresh_cohort()
        self._say(f"{case}: {decision}ed.")
        if self.cases.index(case) + 1 < len(self.cases):
            self.step_case(1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from trame.app import get_server
        from trame_slicer.views import SliceView  # noqa: F401  (the views need trame-slicer and slicer-layer-dm)
    except ImportError as error:
        print(f"ctmr-web: error: {MISSING} ({error})", file=sys.stderr)
        return 2
    try:
        roots = DataRoots(args.data_root or [Path.cwd()])
    except InputError as error:
        print(f"ctmr-web: error: {error}", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        print(f"ctmr-web: warning: serving on {args.host}: anyone who reaches this address can read and write the "
              "data folders; there is no authentication", file=sys.stderr)
    server = get_server("ctmr-web", client_type="vue3")
    WebApp(server, roots, args.reviewer)

    @server.controller.add("on_server_ready")
    def _ready(**_):
        print(f"ctmr-web: serving http://{args.host}:{server.port}/ (data folders: "
              f"{', '.join(map(str, roots.folders))})", flush=True)

    server.start(host=args.host, port=args.port, open_browser=False, timeout=0, show_connection_info=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
