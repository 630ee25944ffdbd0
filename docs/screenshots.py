"""Render ctmr-web's pictures for the README and the guide into docs/images/ (`make screenshots`).

Starts ctmr-web on a free loopback port, registers the bundled pair in Debian's Chromium (Playwright) and saves
the page: after loading, after registering (overlay), and in checkerboard mode.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

IMAGES = Path(__file__).resolve().parent / "images"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=IMAGES)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen([sys.executable, "-m", "CTMRRegistrationLib.web.app", "--data-root", data,
                                   "--port", str(port)], stdout=subprocess.PIPE, text=True)
        try:
            print(server.stdout.readline().strip())
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 800}, device_scale_factor=1)
                page.goto(f"http://127.0.0.1:{port}/")
                page.get_by_test_id("load-sample").click()
                page.wait_for_function("document.querySelector('[data-testid=pair-label]').innerText"
                                       ".includes('bundled')")
                time.sleep(2)  # the streamed views catch up
                page.screenshot(path=args.output / "ctmr-web-loaded.png")
                page.get_by_test_id("register").click()
                page.get_by_test_id("verdict").wait_for(timeout=300_000)
                time.sleep(2)
                page.screenshot(path=args.output / "ctmr-web-registered.png")
                page.get_by_test_id("display-mode").click()
                page.get_by_text("checkerboard").last.click()
                time.sleep(3)
                page.screenshot(path=args.output / "ctmr-web-checkerboard.png")
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {', '.join(sorted(path.name for path in args.output.glob('ctmr-web-*.png')))} in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
