"""Only the dashboard's own page can drive it: token in a header, Origin, Content-Type, Host.

Plain HTTP clients on 127.0.0.1 send what a hostile page's browser would attach by itself;
the browser version of the same attack is in ``test_dashboard_hostile_browser.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pykka
import pytest

from meta_orchestrator.webui.gateway import Gateway, GatewayError
from meta_orchestrator.config.settings import Settings, WebSettings
from meta_orchestrator.messages.gateway import GatewayAddress
from meta_orchestrator.messages.session import AnswerGiven, ControlRequested, SessionStateChanged
from meta_orchestrator.webui.security import Guard, allowed_hosts
from tests.conftest import ProbeHandle, wait_for
from tests.webui.test_gateway import TOKEN, http, session_snapshot, start_gateway


@pytest.fixture(autouse=True)
def _stop_actors() -> Any:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


@pytest.fixture
def gateway(tmp_path: Path, probe: ProbeHandle) -> GatewayAddress:
    ref, address = start_gateway(tmp_path, probe.ref)
    question = {"id": "q1", "kind": "clarification", "text": "Which port?", "asked_by": "coordinator"}
    ref.tell(SessionStateChanged(snapshot=session_snapshot(questions=[question])))
    wait_for(lambda: http(address, "GET", "/api/session")[1]["session"], message="the session")
    return address


def _told_before_an_allowed_request(address: GatewayAddress, probe: ProbeHandle) -> list[Any]:
    """What the refused requests told the coordinator: an allowed control sent after them takes
    the same path (request thread, then the gateway's inbox), so once it arrives, anything a
    wrongly accepted request told has arrived before it."""
    own = {"Origin": f"http://127.0.0.1:{address.port}"}
    assert http(address, "POST", "/api/control/pause", {"agent": "codex"}, headers=own)[0] == 202
    marker = probe.expect(ControlRequested, where=lambda m: m.agent == "codex")
    earlier = [m for m in probe.drain() if isinstance(m, (ControlRequested, AnswerGiven))]
    return [m for m in earlier if m is not marker]


def _post(address: GatewayAddress, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(address.base_url + path, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


FOREIGN = "http://127.0.0.1:1"  # another port of this machine is another origin


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"agent=claude"),  # a <form method=post>
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--\r\n"),
        ("text/plain", b'{"agent": "claude"}'),  # fetch(..., {mode: "no-cors"}) with a JSON-looking body
    ],
)
def test_what_a_foreign_page_can_send_by_itself_is_refused_and_changes_nothing(
    gateway: GatewayAddress, probe: ProbeHandle, content_type: str, body: bytes
) -> None:
    # The browser attaches the Origin, and whatever cookie it holds for 127.0.0.1.
    cookie = {"Cookie": f"orchestrate_token={TOKEN}"}
    for path in ("/api/control/stop", "/api/control/pause", "/api/answer", "/api/close"):
        status, text = _post(gateway, path, body, {"Content-Type": content_type, "Origin": FOREIGN, **cookie})
        assert status == 403 and "Origin" in text, (path, status, text)
        status, text = _post(gateway, path, body, {"Content-Type": content_type, **cookie})  # no Origin
        assert status == 415 and "application/json" in text, (path, status, text)
    assert not _told_before_an_allowed_request(gateway, probe)


def test_json_without_the_token_header_is_refused(gateway: GatewayAddress, probe: ProbeHandle) -> None:
    headers = {"Content-Type": "application/json", "Cookie": f"orchestrate_token={TOKEN}"}
    status, text = _post(gateway, "/api/control/stop", b"{}", headers)
    assert status == 401 and "token" in text
    status, text = _post(gateway, f"/api/control/stop?token={TOKEN}", b"{}", headers)
    assert status == 401
    assert not _told_before_an_allowed_request(gateway, probe)


def test_a_foreign_origin_is_refused_even_with_the_token(gateway: GatewayAddress, probe: ProbeHandle) -> None:
    status, body = http(gateway, "POST", "/api/control/pause", {}, headers={"Origin": FOREIGN})
    assert status == 403 and "Origin" in body["error"]
    status, body = http(gateway, "OPTIONS", "/api/control/pause", headers={"Origin": FOREIGN})  # a CORS preflight
    assert status == 403
    assert not _told_before_an_allowed_request(gateway, probe)


def test_the_dashboards_own_origin_with_the_token_works(gateway: GatewayAddress, probe: ProbeHandle) -> None:
    own = f"http://127.0.0.1:{gateway.port}"
    assert http(gateway, "POST", "/api/control/pause", {"agent": "codex"}, headers={"Origin": own})[0] == 202
    told = probe.expect(ControlRequested)
    assert (told.action, told.agent) == ("pause", "codex")
    assert (
        http(gateway, "POST", "/api/answer", {"question_id": "q1", "answer": "80"}, headers={"Origin": own})[0] == 202
    )
    assert probe.expect(AnswerGiven).answer == "80"


def test_a_cross_origin_read_gets_no_cors_headers(gateway: GatewayAddress) -> None:
    import urllib.request

    req = urllib.request.Request(gateway.base_url + "/api/health", headers={"Origin": FOREIGN})
    with urllib.request.urlopen(req, timeout=5) as response:
        assert response.headers.get("Access-Control-Allow-Origin") is None


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("since=" + "9" * 5000, "too long"),
        ("since=" + "9" * 100, "at most 15 digits"),
        ("since=claude:" + "9" * 100, "at most 15 digits"),
        ("limit=" + "9" * 5000, "limit must be a whole number"),
        ("x" * 3000 + "=1", "unknown query parameter"),
    ],
)
def test_huge_numbers_get_a_plain_400(gateway: GatewayAddress, query: str, says: str) -> None:
    status, body = http(gateway, "GET", "/api/events?" + query)
    assert status == 400 and says in body["error"], body
    assert len(body["error"]) < 300  # the input is not echoed back whole


def test_host_allowlist() -> None:
    loopback = allowed_hosts("127.0.0.1")
    assert {"127.0.0.1", "localhost", "::1"} <= loopback and "evil.example" not in loopback
    remote = allowed_hosts("192.0.2.10")
    assert "192.0.2.10" in remote and "evil.example" not in remote
    guard = Guard(token=TOKEN, port=8000, hosts=remote)
    ok = {"Host": "192.0.2.10:8000", "X-Orchestrate-Token": TOKEN}
    assert guard.check("GET", "/api/session", ok) is None
    refused = guard.check("GET", "/api/session", {**ok, "Host": "rebound.example:8000"})
    assert refused is not None and refused.status == 403 and "Host" in refused.reason


def test_a_remote_host_needs_allow_remote(tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="--allow-remote"):
        Gateway(WebSettings(host="192.0.2.10", port=0), tmp_path, TOKEN)


def test_the_launcher_refuses_a_remote_host_without_allow_remote(tmp_path: Path, capsys: Any) -> None:
    from meta_orchestrator.actors.app import launcher

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # the preflight refuses it after the launcher's logging is set up: put back as it was
        code = launcher.main(["a task", "--demo", "--workspace", str(tmp_path / "ws"), "--host", "0.0.0.0"])
    finally:
        root.handlers[:], root.level = handlers, level
    assert code == launcher.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--allow-remote" in err and "ssh -L" in err
    assert not (tmp_path / "ws").exists()  # nothing started

    from meta_orchestrator.actors.app.system import LaunchRequest
    from meta_orchestrator.actors.app.prepare import check_dashboard_reach

    settings = Settings.model_validate({"web": {"host": "0.0.0.0", "allow_remote": True}})
    check_dashboard_reach(settings, LaunchRequest(task="a task", target=None))  # allowed, and said
    assert "travels in clear" in capsys.readouterr().err
