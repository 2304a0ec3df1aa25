"""``orchestrate agents``: every registered CLI, installed or not, its version, credentials and
sandbox, with PATH pointed at a folder holding fakes of some of them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters.registry import agent_names, get_adapter
from meta_orchestrator.actors.app.launcher import main
from tests.conftest import wait_for


def _fake(folder: Path, name: str, version: str) -> None:
    script = folder / name
    script.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "{version}"; exit 0; fi\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """claude and codex installed (fakes answering --version), the others missing; only
    claude has a key; a fresh HOME where codex left its login file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake(bin_dir, "claude", "2.1.197 (Claude Code)")
    _fake(bin_dir, "codex", "codex-cli 0.169.0")
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "auth.json").write_text("{}")
    for name in list(os.environ):
        if any(w in name for w in ("KEY", "TOKEN", "SECRET")):
            monkeypatch.delenv(name)
    # bwrap and sh stay reachable: the sandbox check and the fakes need them.
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-not-shown")
    monkeypatch.chdir(tmp_path)
    return bin_dir


def test_json_lists_every_registered_cli_with_what_it_can_do_here(fakes, capsys):
    assert main(["agents", "--json"]) == 0
    out = capsys.readouterr().out
    assert "sk-ant-not-shown" not in out  # a credential's name, never its value
    reports = {r["name"]: r for r in json.loads(out)}
    assert list(reports) == list(agent_names())  # the registry's, whichever are registered
    claude, codex = reports["claude"], reports["codex"]
    assert claude["installed"] and claude["path"] == str(fakes / "claude")
    assert claude["version"] == "2.1.197 (Claude Code)"
    assert claude["credentials"] == ["ANTHROPIC_API_KEY"]
    assert codex["version"] == "codex-cli 0.169.0" and codex["credentials"] == ["~/.codex/auth.json"]
    assert not any("not installed" in p for p in claude["problems"] + codex["problems"])
    for name, report in reports.items():
        adapter = get_adapter(name)
        assert report["protocols"] == list(adapter.protocols)
        if name in ("claude", "codex"):
            continue
        assert not report["installed"] and report["path"] is None and report["version"] is None
        assert any(adapter.install_hint() in p for p in report["problems"]), report
        # A CLI reading another vendor's key (qwen takes ANTHROPIC_API_KEY) finds the fakes' one.
        assert bool(report["credentials"]) != any("no credentials found" in p for p in report["problems"]), report


def test_plain_text_says_why_something_is_missing(fakes, capsys):
    assert main(["agents"]) == 0
    out = capsys.readouterr().out
    blocks = {b.split()[0]: b for b in out.strip().split("\n\n")}
    assert set(blocks) == set(agent_names())
    assert f"installed    yes, {fakes / 'claude'}" in blocks["claude"]
    assert "credentials  ANTHROPIC_API_KEY" in blocks["claude"]
    assert "installed    no (gemini)" in blocks["gemini"]
    assert get_adapter("gemini").install_hint() in blocks["gemini"]
    assert "credentials  none found" in blocks["gemini"]


def test_the_sandbox_check_is_reported(fakes, capsys, tmp_path):
    config = tmp_path / "off.toml"
    config.write_text('[sandbox]\nos = "off"\n')
    assert main(["agents", "--json", "--config", str(config)]) == 0
    for report in json.loads(capsys.readouterr().out):
        assert report["sandbox_ready"] is False
        assert any('sandbox.os = "off"' in p for p in report["problems"])
        assert report["state_folders"], report  # where its state would be copied from


def test_gemini_is_probed_without_its_relaunch(tmp_path):
    """gemini's --version relaunches itself as a child node process unless told not to: its
    probe (which the start waits on before the dashboard answers) tells it not to."""
    from meta_orchestrator.actors.adapters.registry import driven
    from meta_orchestrator.actors.recovery.preflight import check_cli

    seen = tmp_path / "env.txt"
    fake = tmp_path / "gemini"
    fake.write_text(f'#!/bin/sh\necho "$GEMINI_CLI_NO_RELAUNCH" > {seen}\necho 0.61.0\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    for adapter in (get_adapter("gemini"), driven("gemini", "acp")):
        check = check_cli("gemini", adapter, (str(fake),), {"PATH": "/usr/bin:/bin"})
        assert (check.version, check.problem) == ("0.61.0", None)
        assert seen.read_text().strip() == "true"
        seen.unlink()
    check_cli("claude", get_adapter("claude"), (str(fake),), {"PATH": "/usr/bin:/bin"})
    assert seen.read_text().strip() == ""  # the others' probes run in the environment given


def test_a_hung_probe_is_ended_with_everything_it_started(tmp_path):
    """A ``--version`` that starts a child and hangs: the probe gives up after its timeout and
    ends the child too (it held the probe's pipes and would have outlived the start)."""
    from meta_orchestrator.actors.processes.process_groups import running
    from meta_orchestrator.actors.recovery.preflight import check_cli

    child_pid = tmp_path / "child.pid"
    fake = tmp_path / "claude"
    fake.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {child_pid}\nsleep 600\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    check = check_cli("claude", get_adapter("claude"), (str(fake),), {"PATH": "/usr/bin:/bin"}, timeout_s=1)
    assert check.version is None and check.problem == f"{fake} --version did not answer in 1s"
    child = int(child_pid.read_text())
    wait_for(lambda: not running(child), 10, message="the probe's child to be ended")
