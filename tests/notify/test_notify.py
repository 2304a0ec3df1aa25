"""Notifications: a real HTTP receiver on 127.0.0.1 hears a demo session's events; receivers
that refuse, fail or hang change nothing in the session; ``notify-send`` is a fake fixture
script that records its argv."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.app.launcher import EXIT_USAGE
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.notify.delivery import Deliveries, Desktop
from meta_orchestrator.actors.notify.notices import NoticeRules
from meta_orchestrator.actors.notify.start import notify_channels
from meta_orchestrator.config.settings import ConfigError, load_settings
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.session import SessionEnded
from tests.conftest import popen_orchestrate, wait_for

FAST = {
    "review.debounce_s": 0.2,
    "recovery.backoff_base_s": 0.05,
    "recovery.backoff_jitter": 0.5,
    "limits.enabled": False,
    "questions.timeout_s": {"clarification": 0.3},  # asked, then it takes its default: the session ends
}
CONCERNS = {"ORCHESTRATE_DEMO_SCENARIO_CODEX": "concern", "ORCHESTRATE_DEMO_SCENARIO_CLAUDE": "concern"}


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST. ``answers``: the statuses of the
    first requests, in order (then 200); ``hang``: every request waits until ``release``."""

    def __init__(self, answers: tuple[int, ...] = (), hang: bool = False) -> None:
        self.posts: list[dict[str, Any]] = []
        self.answers = list(answers)
        self.hang = hang
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.posts.append(
                        {"type": self.headers.get("Content-Type"), "body": json.loads(body), "status": status}
                    )
                if receiver.hang:
                    receiver.release.wait(60)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/secret-part"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self, event: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [p["body"] for p in self.posts if p["status"] == 200 and event in (None, p["body"]["event"])]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


def _dead_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then closed; nothing else takes it here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_demo(tmp_path: Path, env: dict[str, str], notify: dict[str, Any], dashboard: bool = False) -> tuple[int, dict]:
    overrides = {"workspace": str(tmp_path / "ws"), **FAST, **{f"notify.{k}": v for k, v in notify.items()}}
    if dashboard:
        overrides["web.port"] = 0
    code = run(
        load_settings(None, overrides),
        LaunchRequest(
            task="Add a /health endpoint",
            target=None,
            demo=True,
            dashboard=dashboard,
            exit_when_done=True,
            console=False,
            env={**env, **CONCERNS},
            answer_channels=("program",),  # someone could answer, but nobody does: the timeout does
            print_url=lambda _url: None,
        ),
    )
    folder = next(p for p in (tmp_path / "ws").iterdir() if p.is_dir())
    return code, json.loads((folder / "state.json").read_text())


def _fake_notify_send(folder: Path) -> Path:
    """``notify-send`` as a script that appends its argv to a file: NUL after each, two after a call."""
    folder.mkdir()
    record = folder / "argv.log"
    script = folder / "notify-send"
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done >> {record}\nprintf "\\0" >> {record}\n')
    script.chmod(0o755)
    return record


def _calls(record: Path) -> list[list[str]]:
    if not record.exists():
        return []
    return [call.split("\0") for call in record.read_text().split("\0\0") if call]


@pytest.mark.session
def test_a_demo_session_that_asks_and_ends_posts_once_per_event(tmp_path, demo_env, receivers, monkeypatch):
    receiver = Receiver()
    receivers.append(receiver)
    record = _fake_notify_send(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    code, state = _run_demo(tmp_path, demo_env, {"webhook_urls": [receiver.url], "desktop": True}, dashboard=True)
    assert code == 0 and state["status"] == "completed"
    wait_for(lambda: receiver.accepted("session_ended"), message="the session_ended POST", timeout=10)
    asked = [q for q in state["questions"]]
    assert asked, "the demo session asked nothing"
    opened = receiver.accepted("question_opened")
    assert sorted(b["question"]["id"] for b in opened) == sorted(q["id"] for q in asked)  # one POST each
    [ended] = receiver.accepted("session_ended")
    assert (ended["status"], ended["exit_code"]) == ("completed", 0)
    assert {b["event"] for b in receiver.accepted()} == {"question_opened", "session_ended"}
    for post in receiver.posts:
        body = post["body"]
        assert post["type"].startswith("application/json")
        assert body["session_id"] == state["session_id"]
        # Slack's incoming webhooks need only a non-empty "text"; the address is there, without the token.
        assert isinstance(body["text"], str) and state["session_id"] in body["text"]
        assert body["dashboard_url"].startswith("http://127.0.0.1:") and "token" not in body["dashboard_url"]
        assert body["dashboard_url"] in body["text"]
    # The desktop: one notify-send per event, its title and the same text.
    wait_for(lambda: len(_calls(record)) == len(receiver.posts), message="a notify-send per event", timeout=10)
    calls = _calls(record)
    assert all(c[0] == "--app-name=orchestrate" for c in calls)
    assert sorted(c[2] for c in calls) == sorted(p["body"]["text"] for p in receiver.posts)
    assert any("waits on you" in c[1] for c in calls) and any("session completed" in c[1] for c in calls)


@pytest.mark.session
def test_events_chooses_what_is_sent(tmp_path, demo_env, receivers):
    receiver = Receiver()
    receivers.append(receiver)
    code, state = _run_demo(tmp_path, demo_env, {"webhook_urls": [receiver.url], "events": ["session_ended"]})
    assert code == 0 and any(q["status"] != "open" for q in state["questions"])  # a question was asked
    wait_for(lambda: receiver.accepted("session_ended"), message="the session_ended POST", timeout=10)
    assert [b["event"] for b in receiver.accepted()] == ["session_ended"]
    assert receiver.accepted()[0]["dashboard_url"] is None  # no dashboard: none to point at


@pytest.mark.session
def test_failing_receivers_change_nothing_in_the_session(tmp_path, demo_env, receivers, caplog):
    """A dead port, a receiver answering 500 then 200, and one that never answers: the session
    completes as without them, ends while the hanging one still holds its request, and each
    failure is in the log (the address's secret path is not)."""
    flaky, hanging = Receiver(answers=(500,)), Receiver(hang=True)
    receivers.extend((flaky, hanging))
    dead = f"http://127.0.0.1:{_dead_port()}/hook/secret-part"
    caplog.set_level(logging.INFO, logger="meta_orchestrator.actors.notify")
    notify = {"webhook_urls": [dead, flaky.url, hanging.url], "timeout_s": 1, "backoff_s": 0.05, "end_grace_s": 0.5}
    code, state = _run_demo(tmp_path, demo_env, notify)
    assert code == 0 and state["status"] == "completed"
    assert not hanging.release.is_set() and hanging.posts  # it never answered, and run() is back
    wait_for(lambda: flaky.accepted("session_ended"), message="the flaky receiver's session_ended", timeout=10)
    first, second = flaky.posts[0], flaky.posts[1]
    assert (first["status"], second["status"]) == (500, 200) and first["body"] == second["body"]  # retried
    assert len(flaky.accepted("question_opened")) == len(state["questions"])  # each once, in the end
    # Each failure is logged (a sender thread may still be in its attempt when run() returns).
    for said in ("HTTP 500", "retrying in", "Connection refused", "given up", "timed out"):
        wait_for(lambda said=said: said in caplog.text, message=f"{said!r} in the log", timeout=10)
    logged = caplog.text
    assert "secret-part" not in logged


def test_limits_told_are_those_that_acted():
    rules = NoticeRules("s1", ("limit", "session_ended"))
    limit = {"limit": "cost_budget", "observed": 5.2, "threshold": 5.0, "unit": "USD", "sampled_at": 0.0}
    assert rules.on_limit(LimitExceeded(action="warn", reason="near the budget", **limit)) == []
    [notice] = rules.on_limit(LimitExceeded(action="pause_session", reason="spent $5.20 of $5.00", **limit))
    assert notice.body["event"] == "limit" and notice.body["action"] == "pause_session"
    assert "spent $5.20 of $5.00" in notice.body["text"]
    ended = SessionEnded(session_id="s1", status="waiting", exit_code=3, summary="a question waits")
    assert [n.body["status"] for n in rules.on_ended(ended)] == ["waiting"]
    assert rules.on_ended(ended) == []  # once


def test_notify_send_absent_is_one_log_line(tmp_path, caplog):
    settings = load_settings(None, {"notify.desktop": True}).notify
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        assert notify_channels(settings, path=str(tmp_path / "empty")) == []
    assert [r.getMessage() for r in caplog.records] == [
        "notify: desktop = true, but notify-send is not on PATH; no desktop notifications"
    ]
    record = _fake_notify_send(tmp_path / "bin")
    [desktop] = notify_channels(settings, path=str(tmp_path / "bin"))
    assert isinstance(desktop, Desktop)
    deliveries = Deliveries([desktop], settings)
    deliveries.offer(
        *NoticeRules("s1", ("session_ended",)).on_ended(
            SessionEnded(session_id="s1", status="failed", exit_code=1, summary="it broke")
        )
    )
    deliveries.close()  # waits for the one queued, within the grace
    [call] = _calls(record)
    assert call[:2] == ["--app-name=orchestrate", "orchestrate: session failed"] and "it broke" in call[2]


def test_a_notify_send_that_hangs_is_killed_with_its_group(tmp_path, caplog):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "notify-send").write_text("#!/bin/sh\nsleep 300 &\nwait\n")
    (folder / "notify-send").chmod(0o755)
    settings = load_settings(None, {"notify.desktop": True, "notify.timeout_s": 0.5, "notify.retries": 0}).notify
    deliveries = Deliveries(notify_channels(settings, path=str(folder)), settings)
    deliveries.offer(
        *NoticeRules("s1", ("session_ended",)).on_ended(
            SessionEnded(session_id="s1", status="stopped", exit_code=130, summary="stopped")
        )
    )
    wait_for(lambda: "process group was killed" in caplog.text, message="the kill logged", timeout=10)
    deliveries.close()  # the autouse fixture then checks no sleep is left


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        ('webhook_urls = "http://127.0.0.1:9/hook"', "notify.webhook_urls"),
        ('webhook_urls = ["ftp://example.org/hook"]', "is not an http:// or https:// address"),
        ('webhook_urls = ["https:///no-host"]', "is not an http:// or https:// address"),
        ('events = ["question_opened", "questions"]', "notify.events"),
        ("desktop = 2", "notify.desktop"),
        ("timeout_s = 0", "notify.timeout_s"),
        ("webhooks = []", "notify.webhooks"),
    ],
)
def test_a_broken_notify_section_is_a_clear_error(tmp_path, toml, said):
    path = tmp_path / "config.toml"
    path.write_text(f"[notify]\n{toml}\n")
    with pytest.raises(ConfigError, match=f"config file {path} has 1 problem") as raised:
        load_settings(path)
    assert said in str(raised.value)


def test_the_launcher_refuses_a_broken_notify_section_before_anything_starts(tmp_path, demo_env):
    config = tmp_path / "config.toml"
    config.write_text('[notify]\nevents = ["question_opened", "session_end"]\n')
    launcher = popen_orchestrate(
        [
            "Add a /health endpoint",
            "--demo",
            "--no-dashboard",
            "--config",
            str(config),
            "--workspace",
            str(tmp_path / "ws"),
        ],
        demo_env,
    )
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == EXIT_USAGE, err
    assert f"orchestrate: config file {config} has 1 problem(s):\n  notify.events.1: " in err
    assert "'question_opened', 'session_ended' or 'limit'" in err
    assert not (tmp_path / "ws").exists()  # no session was begun
