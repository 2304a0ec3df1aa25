"""A page from another 127.0.0.1 port, in the same browser as the dashboard, cannot drive it.

The browser holds the dashboard open in one tab (its token in that tab's sessionStorage) and
even a cookie with the token for 127.0.0.1; a hostile page served from another port tries
every request a page can make by itself: no-cors and CORS fetches, a JSON-looking form POST,
WebSockets. Nothing reaches the coordinator, no socket is registered, nothing changes.
"""

from __future__ import annotations

import http.server as http_server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from meta_orchestrator.messages.gateway import GetGatewayStats
from meta_orchestrator.messages.session import AnswerGiven, ControlRequested, SessionStateChanged
from tests.conftest import ProbeHandle, wait_for
from tests.webui.test_dashboard_browser import browser_page  # noqa: F401 - the fixture
from tests.webui.test_gateway import TOKEN, http, session_snapshot, start_gateway

pytestmark = pytest.mark.browser

HOSTILE_PAGE = """<!doctype html>
<html><head><title>cat pictures</title></head><body>
<iframe name="sink"></iframe>
<form id="json-form" method="post" target="sink" enctype="text/plain" action="{base}/api/control/stop">
  <input name='{{"agent": null, "x": "' value='"}}'>
</form>
<form id="url-form" method="post" target="sink" action="{base}/api/answer">
  <input name="question_id" value="q1"><input name="answer" value="yes">
</form>
<script>
const base = "{base}";
const results = {{}};
window.results = results;
async function attempt(name, fn) {{
  try {{ results[name] = await fn(); }} catch (e) {{ results[name] = "blocked: " + e.name; }}
}}
function socket(name, protocols) {{
  return new Promise((resolve) => {{
    const events = [];
    let ws;
    try {{ ws = new WebSocket(base.replace("http", "ws") + "/ws", protocols); }}
    catch (e) {{ resolve("blocked: " + e.name); return; }}
    ws.onopen = () => {{ events.push("open"); ws.send(JSON.stringify({{type: "control", action: "stop"}})); }};
    ws.onmessage = (m) => events.push("message");
    ws.onclose = () => {{ events.push("close"); resolve(events.join(",")); }};
    setTimeout(() => resolve(events.join(",") + ",timeout"), 8000);
  }});
}}
function submit(id) {{
  return new Promise((resolve) => {{
    const sink = document.querySelector("iframe");
    sink.onload = () => resolve("submitted");
    document.getElementById(id).submit();
  }});
}}
(async () => {{
  const json = JSON.stringify({{agent: null}});
  await attempt("no-cors text/plain stop", async () => {{
    const r = await fetch(base + "/api/control/stop", {{method: "POST", mode: "no-cors", credentials: "include",
      headers: {{"Content-Type": "text/plain"}}, body: json}});
    return "opaque " + r.type;
  }});
  await attempt("no-cors form pause", async () => {{
    const r = await fetch(base + "/api/control/pause", {{method: "POST", mode: "no-cors", credentials: "include",
      body: new URLSearchParams({{agent: "claude"}})}});
    return "opaque " + r.type;
  }});
  await attempt("cors json stop", async () => {{
    const r = await fetch(base + "/api/control/stop", {{method: "POST", credentials: "include",
      headers: {{"Content-Type": "application/json"}}, body: json}});
    return "status " + r.status;
  }});
  await attempt("cors with a guessed token", async () => {{
    const r = await fetch(base + "/api/control/stop", {{method: "POST", credentials: "include",
      headers: {{"Content-Type": "application/json", "X-Orchestrate-Token": "guess"}}, body: json}});
    return "status " + r.status;
  }});
  await attempt("read the session", async () => {{
    const r = await fetch(base + "/api/session", {{credentials: "include"}});
    return "read " + (await r.text()).slice(0, 50);
  }});
  await attempt("close", async () => {{
    const r = await fetch(base + "/api/close", {{method: "POST", mode: "no-cors", credentials: "include"}});
    return "opaque " + r.type;
  }});
  await attempt("json-looking form stop", () => submit("json-form"));
  await attempt("url form answer", () => submit("url-form"));
  await attempt("socket", () => socket("socket", undefined));
  await attempt("socket with a guessed token", () => socket("socket2", ["orchestrate", "token.guess"]));
  window.done = true;
}})();
</script></body></html>
"""


@pytest.fixture
def hostile_site() -> Iterator[Any]:
    """Serves one page from a free 127.0.0.1 port; ``site.page = <html>`` sets it."""

    class Handler(http_server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = server.page.encode()  # type: ignore[attr-defined]
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.page = ""  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="hostile-site", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


def test_a_page_from_another_port_cannot_pause_stop_or_answer(
    browser_page: Any,  # noqa: F811
    hostile_site: Any,
    tmp_path: Path,
    probe: ProbeHandle,
    caplog: Any,
) -> None:
    page = browser_page
    caplog.set_level(logging.WARNING, logger="meta_orchestrator.webui.app")
    closed = threading.Event()
    ref, address = start_gateway(tmp_path, probe.ref, close_requested=closed)
    question = {"id": "q1", "kind": "clarification", "text": "Which port?", "asked_by": "coordinator"}
    ref.tell(SessionStateChanged(snapshot=session_snapshot(questions=[question])))

    # The dashboard is open in this browser, and the browser even holds a cookie with the token.
    page.goto(address.url)
    page.locator('#inbox .question[data-id="q1"]').wait_for(timeout=10_000)
    wait_for(lambda: len(ref.ask(GetGatewayStats(), timeout=2).clients) == 1, message="the dashboard's socket")
    page.context.add_cookies([{"name": "orchestrate_token", "value": TOKEN, "url": address.base_url}])
    before = http(address, "GET", "/api/session")[1]
    probe.drain()

    hostile = page.context.new_page()
    hostile_site.page = HOSTILE_PAGE.format(base=address.base_url)
    hostile.goto(f"http://127.0.0.1:{hostile_site.server_address[1]}/")
    hostile.wait_for_function("window.done === true", timeout=30_000)
    results = hostile.evaluate("window.results")
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]

    # The browser itself blocks what it must (CORS); the gateway refuses the rest.
    assert results["cors json stop"].startswith("blocked"), results
    assert results["cors with a guessed token"].startswith("blocked"), results
    assert results["read the session"].startswith("blocked"), results
    assert "message" not in results["socket"] and "open" not in results["socket"], results
    assert "message" not in results["socket with a guessed token"], results
    # The requests a browser lets through reach the gateway, which refuses them.
    for line in ("POST /api/control/stop", "POST /api/control/pause", "POST /api/answer", "POST /api/close", "GET /ws"):
        assert any(line in r and "foreign Origin" in r for r in refused), (line, refused)
    assert not [m for m in probe.drain() if isinstance(m, (ControlRequested, AnswerGiven))]
    assert not closed.is_set()
    assert http(address, "GET", "/api/session")[1] == before
    assert len(ref.ask(GetGatewayStats(), timeout=2).clients) == 1  # only the dashboard's own page

    # The dashboard's own page, in the same browser, still drives the session.
    page.locator('#session-controls button[data-action="pause"]').click()
    told = probe.expect(ControlRequested)
    assert (told.action, told.agent) == ("pause", None)


def test_the_page_keeps_the_token_for_its_tab_and_removes_it_from_the_address(
    browser_page: Any,  # noqa: F811
    tmp_path: Path,
    probe: ProbeHandle,
) -> None:
    page = browser_page
    ref, address = start_gateway(tmp_path, probe.ref)
    ref.tell(SessionStateChanged(snapshot=session_snapshot()))
    page.goto(address.url)
    page.locator("#conn-text", has_text="Live").wait_for(timeout=10_000)
    assert "token" not in page.url and page.url.rstrip("/") == address.base_url
    assert page.evaluate("sessionStorage.getItem('orchestrate_token')") == TOKEN
    assert page.context.cookies() == []  # nothing a browser would attach by itself
    page.reload()  # the tab keeps its token
    page.locator("#conn-text", has_text="Live").wait_for(timeout=10_000)
    page.locator('#session-controls button[data-action="review"]').click()
    assert probe.expect(ControlRequested).action == "review"
    assert not page.errors, page.errors  # type: ignore[attr-defined]
