"""Browser notifications from the dashboard: a real launcher, Debian's chromium, and
``window.Notification`` wrapped by an init script so each notification created is recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import wait_for
from tests.notify.test_notify import CONCERNS, Receiver
from tests.webui.test_dashboard_browser import browser_page  # noqa: F401 - the fixture
from tests.webui.test_dashboard_session_browser import _end_launcher, _start_launcher

pytestmark = [pytest.mark.session, pytest.mark.browser]

RECORD_NOTIFICATIONS = """
(() => {
  window.__notifications = [];
  const Real = window.Notification;
  if (typeof Real !== "function") return;
  class Recorded extends Real {
    constructor(title, options) {
      window.__notifications.push({ title: title, body: (options || {}).body || "" });
      super(title, options);
    }
  }
  window.Notification = Recorded;
})();
"""


def test_a_question_shows_a_browser_notification_once_turned_on(tmp_path: Path, demo_env, browser_page: Any):  # noqa: F811
    receiver = Receiver()  # the same session's webhook: its address is the page's
    config = tmp_path / "config.toml"
    config.write_text(f"[notify]\nwebhook_urls = [{json.dumps(receiver.url)}]\n")
    env = {**demo_env, **CONCERNS, "ORCHESTRATE_DEMO_PACE": "0.05"}
    launcher, url = _start_launcher(tmp_path, env, ("--config", str(config)))
    try:
        page = browser_page
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        page.context.grant_permissions(["notifications"], origin=origin)
        page.add_init_script(RECORD_NOTIFICATIONS)
        page.goto(url)
        button = page.locator("#notify-toggle")
        button.wait_for(state="visible", timeout=10_000)
        assert button.inner_text() == "Notify me"
        button.click()
        page.locator('#notify-toggle[aria-pressed="true"]').wait_for(timeout=10_000)
        page.locator("#inbox .question").first.wait_for(timeout=60_000)
        shown = wait_for(
            lambda: page.evaluate("window.__notifications"), message="a notification for the question", timeout=10
        )
        assert shown[0]["title"].endswith("waits on you") and shown[0]["body"]
        # The webhook heard the same question, pointing at this dashboard without its token.
        [posted] = wait_for(lambda: receiver.accepted("question_opened"), message="the webhook", timeout=10)
        assert posted["dashboard_url"] == origin and posted["question"]["text"] in shown[0]["body"]
        assert not page.errors, page.errors
    finally:
        _end_launcher(launcher)
        receiver.close()
