"""The picture of the dashboard in README.md (docs/dashboard.jpg), and the command that takes it.

    .venv/bin/python -m tests.docs_screenshot            # rewrite docs/dashboard.jpg
    .venv/bin/python -m tests.docs_screenshot /tmp/d.png # a PNG elsewhere instead

Starts a demo session (``orchestrate "Add a /health endpoint" --demo --port 0``) in a
temporary workspace, opens its dashboard in Debian's chromium (/usr/bin/chromium) through
Playwright at 1280x800, waits until the design step is done and the implementer is at work,
saves a JPEG, then stops the session with Ctrl-C (SIGINT to the launcher's process group)
and waits for it to end. It lives with the tests, beside ``tests/docs_pages.py``, because it
reuses their helpers and nothing an installed ``orchestrate`` runs needs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import PROJECT_ROOT, kill_tree, start_orchestrate

IMAGE = PROJECT_ROOT / "docs" / "dashboard.jpg"
WIDTH, HEIGHT = 1280, 800
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
TASK = "Add a /health endpoint"


def _demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATE_DEMO_SCENARIO")}
    env["ORCHESTRATE_DEMO_PACE"] = "0.1"  # lively, yet slow enough to catch agents mid-step
    return env


def _stop(launcher: subprocess.Popen) -> None:
    """Ctrl-C to the launcher's group, as a user would; force only if it does not end."""
    if launcher.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGINT)
        try:
            launcher.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            pass
    kill_tree(launcher)


def _shoot(url: str, image: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.goto(url)
            # the designer's step is done (its output names the design file) ...
            page.locator('article.worker[data-agent="gemini"]').filter(has_text="docs/DESIGN.md").wait_for(
                timeout=90_000
            )
            # ... and the implementer is running with some output of its own
            claude = page.locator('article.worker[data-agent="claude"]')
            claude.locator(".w-status").filter(has_text="Running").wait_for(timeout=90_000)
            time.sleep(2.0)  # let a few of its events arrive
            image.parent.mkdir(parents=True, exist_ok=True)
            if image.suffix == ".png":
                page.screenshot(path=str(image))
            else:
                page.screenshot(path=str(image), type="jpeg", quality=80)
        finally:
            browser.close()


def main() -> int:
    image = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else IMAGE  # a .png path for a lossless copy
    with tempfile.TemporaryDirectory(prefix="docs-screenshot-") as tmp:
        args = [TASK, "--demo", "--workspace", str(Path(tmp) / "ws"), "--port", "0"]
        launcher, url = start_orchestrate(args, _demo_env(), "dashboard: ")
        try:
            _shoot(url, image)
        finally:
            _stop(launcher)
    print(f"{image}: {image.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
