"""ctmr-web in a real browser (Debian's Chromium driven by Playwright), on loopback only: register the bundled pair,
cancel a run, review a small cohort, and compare the slice views with a rendering of the same pose by Slicer's
slice view in this process (a pose shifted by 15 mm is the negative control). No request may leave 127.0.0.1."""

import csv
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import SimpleITK as sitk

from CTMRRegistrationLib.batch.summary import summary_row, write_summary
from CTMRRegistrationLib.core import resources

pytest.importorskip("trame_slicer.views", reason="the web extra is not installed")
playwright = pytest.importorskip("playwright.sync_api", reason="the web extra is not installed")
pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1400, "height": 800}
SHIFT_MM = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_case(cohort: Path, case: str, transform: sitk.Transform, verdict: str, fixed: Path, moving: Path):
    folder = cohort / case
    folder.mkdir(parents=True)
    sitk.WriteTransform(transform, str(folder / "transform.h5"))
    (folder / "log.txt").write_text(f"$ python -m CTMRRegistrationLib.batch.case --fixed {fixed} --moving {moving}\n")
    record = {"case": case, "status": "registered", "verdict": verdict, "reasons": [] if verdict == "ok" else
              ["edges do not align"], "metrics": {"error_bound_mm": 4.0 if verdict == "ok" else 20.0}}
    (folder / "case.json").write_text(json.dumps(record))
    return record


def shifted_reference() -> sitk.Transform:
    reference = sitk.ReadTransform(str(resources.sample_reference_transform_path()))
    return sitk.CompositeTransform([reference, sitk.TranslationTransform(3, (SHIFT_MM, SHIFT_MM, 0.0))])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data folder with the bundled pair and a two-case cohort: the reference pose (ok), a shifted one (failed)."""
    root = tmp_path_factory.mktemp("web-data")
    fixed, moving = (Path(shutil.copy(path, root)) for path in (resources.sample_ct_path(), resources.sample_mr_path()))
    cohort = root / "cohort"
    reference = sitk.ReadTransform(str(resources.sample_reference_transform_path()))
    records = [write_case(cohort, "good", reference, "ok", fixed, moving),
               write_case(cohort, "shifted", shifted_reference(), "failed", fixed, moving)]
    write_summary(cohort, [summary_row(record, False) for record in records], running=False)
    return root


@pytest.fixture(scope="module")
def server(data):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "CTMRRegistrationLib.web.app", "--data-root", str(data),
                                "--port", str(port), "--reviewer", "tester"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()  # the address, once it serves
    assert line.startswith(f"ctmr-web: serving http://127.0.0.1:{port}/"), line
    yield f"http://127.0.0.1:{port}/"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def outside():
    """Every request to another host than 127.0.0.1 (aborted)."""
    return []


def open_page(browser, server, outside):
    page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)

    def route(request_route):
        if urlparse(request_route.request.url).hostname != "127.0.0.1":
            outside.append(request_route.request.url)
            return request_route.abort()
        return request_route.continue_()

    page.route("**/*", route)
    page.on("websocket", lambda socket_: urlparse(socket_.url).hostname != "127.0.0.1" and outside.append(socket_.url))
    page.goto(server)
    page.get_by_test_id("load-sample").wait_for()
    return page


@pytest.fixture(scope="module")
def page(browser, server, outside):
    return open_page(browser, server, outside)


def text(page, test_id: str) -> str:
    return page.get_by_test_id(test_id).inner_text().strip()


def wait_text(page, test_id: str, predicate, timeout: float = 240.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        locator = page.get_by_test_id(test_id)
        value = locator.inner_text().strip() if locator.count() else ""
        if predicate(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{test_id} still reads {value!r}")


def test_register_the_bundled_pair(page, browser, server, outside):
    page.get_by_test_id("load-sample").click()
    wait_text(page, "pair-label", lambda value: "bundled" in value)
    started = time.monotonic()
    page.get_by_test_id("register").click()
    verdict = wait_text(page, "verdict", lambda value: value in ("ok", "check", "failed"))
    seconds = time.monotonic() - started
    assert verdict == "ok", text(page, "status-line")
    bound = float(text(page, "error-bound").split("\u2264")[1].split()[0])
    assert 0 < bound < 10.0  # the alignment figure: the bundled pair registers within a few millimetres
    metrics = text(page, "metrics")
    assert "elastix backend" in metrics and "error bound, p95 (mm)" in metrics
    print(f"click to verdict: {seconds:.1f} s")
    second = open_page(browser, server, outside)  # a second tab shows the same session
    assert wait_text(second, "verdict", lambda value: value == "ok") == "ok"
    assert text(second, "pair-label") == text(page, "pair-label")
    second.close()
    page.get_by_test_id("save-transform").click()
    saved = wait_text(page, "message", lambda value: value.startswith("Saved"))
    assert Path(saved.removeprefix("Saved ")).is_file()


def test_cancel_leaves_the_scene_unchanged(page):
    nodes, verdict, bound = text(page, "scene-nodes"), text(page, "verdict"), text(page, "error-bound")
    page.get_by_test_id("register").click()
    wait_text(page, "progress-text", lambda value: "searching" in value or "masking" in value)
    page.get_by_test_id("cancel").click()
    wait_text(page, "progress-text", lambda value: value == "cancelled", timeout=60)
    assert text(page, "message") == "Cancelled: the scene is as it was."
    assert (text(page, "scene-nodes"), text(page, "verdict"), text(page, "error-bound")) == (nodes, verdict, bound)


def grey(image: np.ndarray, size: int = 24) -> np.ndarray:
    """A small grey image in [0, 1]: what fonts, antialiasing and JPEG compression leave alone."""
    picture = sitk.GetImageFromArray(image[..., :3].mean(axis=2).astype(np.float32))
    factor = [picture.GetSize()[0] / size, picture.GetSize()[1] / size]
    small = sitk.Resample(sitk.SmoothingRecursiveGaussian(picture, max(factor) / 2), [size, size],
                          sitk.Transform(), sitk.sitkLinear, (0.0, 0.0), factor)
    return sitk.GetArrayFromImage(small) / 255.0


def reference_view(fixed: Path, moving: Path, transform: Path, width: int, height: int) -> np.ndarray:
    """The axial view of the pair at `transform`, rendered by Slicer's slice view offscreen in this process."""
    from trame_slicer.views import SliceView
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    from CTMRRegistrationLib.mrml import node_io
    from CTMRRegistrationLib.mrml.scene import create_headless_context
    from CTMRRegistrationLib.web.views import prepare_scene

    context = create_headless_context()
    prepare_scene(context)
    fixed_node, moving_node = node_io.load_volume(context, fixed), node_io.load_volume(context, moving)
    moving_node.SetAndObserveTransformNodeID(node_io.load_transform(context, transform).GetID())
    view = SliceView(context.scene, context.application_logic, "Red")
    view.render_window().SetSize(width, height)
    view.interactor().InvokeEvent("WindowResizeEvent")
    view.set_orientation("Axial")
    view.set_background_volume_id(fixed_node.GetID())
    view.set_foreground_volume_id(moving_node.GetID())
    view.set_foreground_opacity(0.5)
    view.fit_view_to_content()
    view.render()
    capture = vtkWindowToImageFilter()
    capture.SetInput(view.render_window())
    capture.Update()
    output = capture.GetOutput()
    columns, rows, _ = output.GetDimensions()
    return vtk_to_numpy(output.GetPointData().GetScalars()).reshape(rows, columns, -1)[::-1]


def view_screenshot(page) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    time.sleep(2.0)  # the streamed image follows the scene's change within a few frames
    png = page.locator(".layout-grid-item").first.screenshot()
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def test_cohort_review_and_the_slice_views_at_a_known_pose(page, data, outside):
    page.get_by_test_id("tab-cohort").click()
    page.get_by_test_id("cohort_path").locator("input").fill(str(data / "cohort"))
    page.get_by_test_id("open-cohort").click()
    wait_text(page, "case-name", lambda value: value.startswith("case shifted"))  # the failed case comes first
    assert [link.inner_text() for link in page.get_by_test_id("case-link").all()] == ["shifted", "good"]
    page.get_by_test_id("display-mode").click()
    page.get_by_text("overlay (fixed + moving)").last.click()
    shifted = grey(view_screenshot(page))
    page.get_by_test_id("review-comment").locator("input").fill("moved by 15 mm")
    page.get_by_test_id("reject").click()
    wait_text(page, "case-name", lambda value: value.startswith("case good"))  # a mark steps to the next case
    good = grey(view_screenshot(page))
    page.get_by_test_id("accept").click()
    wait_text(page, "message", lambda value: value == "good: accepted.")
    box = page.locator(".layout-grid-item").first.bounding_box()
    pair = (data / resources.sample_ct_path().name, data / resources.sample_mr_path().name)
    reference = grey(reference_view(*pair, data / "cohort" / "good" / "transform.h5", round(box["width"]),
                                    round(box["height"])))
    good_error, shifted_error = np.abs(good - reference).mean(), np.abs(shifted - reference).mean()
    print(f"view vs reference, mean grey difference: good pose {good_error:.4f}, shifted {shifted_error:.4f}")
    assert good_error < 0.015 and good_error < 0.6 * shifted_error
    with open(data / "cohort" / "reviews.csv", newline="") as handle:
        reviews = {row["case"]: (row["review"], row["comment"], row["reviewer"]) for row in csv.DictReader(handle)}
    assert reviews == {"good": ("accept", "", "tester"), "shifted": ("reject", "moved by 15 mm", "tester")}
    summary = (data / "cohort" / "summary.csv").read_text()
    assert "review,review_comment,reviewer" in summary.splitlines()[0] and "moved by 15 mm" in summary
    assert outside == []
