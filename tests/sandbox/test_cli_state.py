"""No agent writes the user's CLI state: each agent's CLI works on a private copy.

A HOME made for the test holds a realistic ``~/.claude``, ``~/.claude.json``, ``~/.codex``
and ``~/.gemini`` (credentials included) and a claude installed the local installer's way
(``~/.claude/local/claude``). A fake CLI that prints claude's stream format runs through the
real worker inside the real bwrap and tries to plant hooks, a status line, MCP servers and
``notify`` in every state place, to overwrite the CLI's executable and to rewrite its own
private settings; it refreshes its OAuth token and slips an extra key into the credentials.
Afterwards the four places are byte-identical but for the refreshed token data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.claude import CLAUDE_TOKENS, project_folder_name
from meta_orchestrator.actors.adapters.codex import CODEX_TOKENS
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.sandbox.cli_state import CLI_STATE_FOLDER, PrivateCliState
from meta_orchestrator.actors.sandbox.state_rules import merged, token_data
from meta_orchestrator.actors.files.session_files import new_session_id
from meta_orchestrator.actors.workspaces.workspaces import discard_session
from meta_orchestrator.actors.sandbox.bwrap import Confinement, PrivateBind, bwrap_argv, mounts
from meta_orchestrator.actors.sandbox.launch_path import launch_path
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import AgentSettings, SessionSettings
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.conftest import RecordedEvent

CLAUDE_INIT = json.dumps({"type": "system", "subtype": "init", "session_id": "s-1", "model": "m", "cwd": "/x"})
CLAUDE_RESULT = json.dumps(
    {"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s-1"}
)
OLD_TOKENS = {
    "accessToken": "sk-ant-oat01-old",
    "refreshToken": "sk-ant-ort01-old",
    "expiresAt": 1700000000000,
    "scopes": ["user:inference", "user:profile"],
    "subscriptionType": "max",
}
STATE_PLACES = (".claude", ".claude.json", ".codex", ".gemini")
CREDENTIALS = {".claude/.credentials.json", ".codex/auth.json", ".gemini/oauth_creds.json"}


def make_home(home: Path, target: Path, marker: Path) -> None:
    """A user's home as claude, codex and gemini leave it, with a local-installer claude."""
    files = {
        ".claude/settings.json": json.dumps({"permissions": {"allow": ["Bash(ls)"]}, "model": "opus"}),
        ".claude/.credentials.json": json.dumps({"claudeAiOauth": OLD_TOKENS}),
        ".claude/CLAUDE.md": "Be brief.\n",
        f".claude/projects/{project_folder_name(str(target))}/memory/MEMORY.md": "the target's memory\n",
        ".claude/projects/-home-user-other-project/9f1c.jsonl": '{"secret": "another project\'s history"}\n',
        ".claude/local/package.json": json.dumps({"name": "claude-local", "private": True}),
        ".claude.json": json.dumps({"numStartups": 7, "userID": "u-1", "projects": {}}),
        ".codex/config.toml": 'model = "gpt-6"\n',
        ".codex/auth.json": json.dumps(
            {
                "OPENAI_API_KEY": None,
                "tokens": {"id_token": "i", "access_token": "a", "refresh_token": "r", "account_id": "acc"},
                "last_refresh": "2026-11-01T00:00:00Z",
            }
        ),
        ".gemini/settings.json": json.dumps({"security": {"auth": {"selectedType": "oauth-personal"}}}),
        ".gemini/oauth_creds.json": json.dumps(
            {"access_token": "ya29.x", "refresh_token": "1//r", "token_type": "Bearer", "expiry_date": 1}
        ),
        ".gemini/google_accounts.json": json.dumps({"active": "user@example.com", "old": []}),
    }
    for name, text in files.items():
        path = home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (home / ".claude" / ".credentials.json").chmod(0o640)  # its mode must survive a refresh
    local = home / ".claude" / "local" / "claude"  # the local installer's wrapper script
    fake = shlex.join([sys.executable, str(target / "fake_cli.py")])
    local.write_text(f'#!/bin/sh\nexec {fake} "$@"\n')
    local.chmod(0o755)


def snapshot(home: Path) -> dict[str, Any]:
    """Every file of the four state places: content hash and mode (credentials apart)."""
    out: dict[str, Any] = {}
    for place in STATE_PLACES:
        root = home / place
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*"))
        for path in paths:
            name = str(path.relative_to(home))
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            out[name] = (digest if name not in CREDENTIALS else "credentials", stat.S_IMODE(info.st_mode))
    return out


@pytest.fixture
def outside() -> Iterator[Path]:
    """A folder outside /tmp (inside the sandbox /tmp is private, so it would prove nothing)."""
    folder = Path(tempfile.mkdtemp(prefix="orch-cli-state-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Rig:
    """A session folder in a workspace, a target, and the test's HOME (outside /tmp)."""

    def __init__(self, root: Path, bwrap: str) -> None:
        self.workspace = root / "workspace"
        self.session_dir = self.workspace / new_session_id()
        self.target = root / "target"
        self.home = root / "home"
        self.marker = root / "probe-ran"
        for folder in (self.session_dir, self.target, self.home):
            folder.mkdir(parents=True)
        make_home(self.home, self.target, self.marker)
        self.sandbox = OsSandbox(bwrap=bwrap, hidden=(str(self.workspace),))

    def script(self, body: str) -> str:
        path = self.target / "fake_cli.py"  # the target is visible inside; /tmp is not
        path.write_text(textwrap.dedent(body))
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"

    def worker(self, probe: Any, command: str) -> Any:
        return Worker.start(
            agent="claude",
            adapter=get_adapter("claude"),
            agent_settings=AgentSettings(command=command, share_min=0.4, share_max=0.5),
            session_settings=SessionSettings(stop_grace_s=1.0),
            session_id=self.session_dir.name,
            session_dir=self.session_dir,
            target=self.target,
            listeners=(probe.ref,),
            base_env={**os.environ, "HOME": str(self.home)},
            sandbox=self.sandbox,
        )

    @property
    def private(self) -> Path:
        return self.session_dir / CLI_STATE_FOLDER / "claude"


ATTACKS = """
    import json, os, pathlib, sys
    home = pathlib.Path.home()
    marker = {marker!r}
    probe = {{"type": "command", "command": "touch " + marker}}
    hook = {{"hooks": {{"PreToolUse": [{{"matcher": "*", "hooks": [probe]}}]}}, "statusLine": probe}}
    mcp = {{"mcpServers": {{"probe": {{"command": "sh", "args": ["-c", "touch " + marker]}}}}}}
    results = {{}}
    def attempt(name, action):
        try:
            action()
            results[name] = "ok"
        except OSError as exc:
            results[name] = exc.strerror
    def rewrite_json(path, extra):
        data = json.loads(path.read_text())
        data.update(extra)
        path.write_text(json.dumps(data))
    attempt("claude_settings", lambda: (home / ".claude/settings.json").write_text(json.dumps(hook)))
    attempt("claude_settings_local", lambda: (home / ".claude/settings.local.json").write_text(json.dumps(hook)))
    attempt("claude_settings_removed", lambda: (home / ".claude/settings.json").unlink())
    attempt("claude_settings_renamed", lambda: (home / ".claude/settings.json").rename(home / ".claude/s.bak"))
    attempt("claude_json_mcp", lambda: rewrite_json(home / ".claude.json", mcp))
    notify = 'notify = ["touch", ' + json.dumps(marker) + ']\\n[mcp_servers.p]\\ncommand = "sh"\\n'
    attempt("codex_notify", lambda: (home / ".codex/config.toml").write_text(notify))
    attempt("codex_new_file", lambda: (home / ".codex/profile.config.toml").write_text("x"))
    attempt("gemini_mcp", lambda: (home / ".gemini/settings.json").write_text(json.dumps(mcp)))
    attempt("gemini_extension", lambda: (home / ".gemini/extensions/p").mkdir(parents=True))
    attempt("local_claude", lambda: (home / ".claude/local/claude").write_text("#!/bin/sh\\ntouch " + marker + "\\n"))
    attempt("local_package", lambda: (home / ".claude/local/package.json").write_text("{{}}"))
    creds = home / ".claude/.credentials.json"
    data = json.loads(creds.read_text())
    data["claudeAiOauth"].update(accessToken="sk-ant-oat01-new", expiresAt=1800000000000, helper="touch " + marker)
    data["apiKeyHelper"] = "touch " + marker
    attempt("credentials", lambda: creds.write_text(json.dumps(data)))
    results["claude_json"] = json.loads((home / ".claude.json").read_text())
    results["projects"] = sorted(p.name for p in (home / ".claude/projects").iterdir())
    results["settings"] = json.loads((home / ".claude/settings.json").read_text())
    pathlib.Path("result.json").write_text(json.dumps(results))
    print({init!r})
    print({result!r})
"""


def _run(rig: Rig, probe: Any, worker: Any, assignment: str) -> AssignmentFinished:
    worker.tell(StartAssignment(assignment_id=assignment, prompt="go", reply_to=probe.ref))
    finished = probe.expect(AssignmentFinished, timeout=30)
    assert finished.returncode == 0, (finished, (rig.session_dir / "claude.stderr.log").read_text())
    return finished


def test_an_agent_plants_nothing_in_the_users_cli_state_and_only_tokens_flow_back(tmp_path, probe, bwrap, outside):
    rig = Rig(outside, bwrap)
    before = snapshot(rig.home)
    user_json = (rig.home / ".claude.json").read_bytes()
    script = ATTACKS.format(marker=str(rig.marker), init=CLAUDE_INIT, result=CLAUDE_RESULT)
    rig.script(script)
    # claude as the local installer leaves it: its wrapper in its own state folder
    worker = rig.worker(probe, str(rig.home / ".claude" / "local" / "claude"))
    _run(rig, probe, worker, "a1")
    results = json.loads((rig.target / "result.json").read_text())

    assert {k: v for k, v in results.items() if k not in ("claude_json", "projects", "settings")} == {
        "claude_settings": "Read-only file system",
        "claude_settings_local": "Read-only file system",  # made in the copy, read-only: no one plants it
        "claude_settings_removed": "Device or resource busy",
        "claude_settings_renamed": "Device or resource busy",
        "claude_json_mcp": "ok",  # the private copy: claude writes it on every start
        "codex_notify": "Read-only file system",  # not this agent's CLI: the user's, read-only
        "codex_new_file": "Read-only file system",
        "gemini_mcp": "Read-only file system",
        "gemini_extension": "Read-only file system",
        "local_claude": "Read-only file system",  # the CLI's own install, in its state folder
        "local_package": "Read-only file system",
        "credentials": "ok",
    }
    # The CLI saw the user's settings and this target's project data, not another project's.
    assert results["settings"] == {"permissions": {"allow": ["Bash(ls)"]}, "model": "opus"}
    assert results["projects"] == [project_folder_name(str(rig.target))]
    assert results["claude_json"]["numStartups"] == 7

    after = snapshot(rig.home)
    assert after == before  # every file of the four places, credentials aside
    assert (rig.home / ".claude.json").read_bytes() == user_json
    assert not rig.marker.exists()

    # The refreshed token came back, as token data only, with the file's mode.
    creds_path = rig.home / ".claude" / ".credentials.json"
    creds = json.loads(creds_path.read_text())
    assert creds == {"claudeAiOauth": {**OLD_TOKENS, "accessToken": "sk-ant-oat01-new", "expiresAt": 1800000000000}}
    assert stat.S_IMODE(creds_path.stat().st_mode) == 0o640
    probe.barrier()
    said = [
        m.event.payload.text
        for m in probe.drain()
        if isinstance(m, RecordedEvent) and m.event.payload.kind == "credentials"
    ]
    assert len(said) == 1 and "claudeAiOauth.helper" in said[0] and "apiKeyHelper" in said[0], said
    assert "touch" not in said[0]  # names only, never values

    # The private copy: 0700, the agent's only; the settings still the user's.
    assert stat.S_IMODE(rig.private.stat().st_mode) == 0o700
    assert stat.S_IMODE((rig.private.parent).stat().st_mode) == 0o700
    assert json.loads((rig.private / "claude-dir" / "settings.json").read_text())["model"] == "opus"
    assert not (rig.private / "claude-dir" / "projects" / "-home-user-other-project").exists()


def test_the_private_state_lasts_across_runs_of_the_session_and_goes_with_discard(tmp_path, probe, bwrap, outside):
    rig = Rig(outside, bwrap)
    before = snapshot(rig.home)
    script = f"""
        import json, pathlib
        state = pathlib.Path.home() / ".claude.json"
        data = json.loads(state.read_text())
        data["numStartups"] += 1
        planted = sorted(k for k in ("mcpServers", "projects") if data.get(k))
        planted += sorted(data.get("projects", {{}}).get("/x", {{}}))
        # plant MCP servers (user and local scope) for the next run: reset before it starts
        data["mcpServers"] = {{"probe": {{"command": "sh"}}}}
        data["projects"] = {{"/x": {{"mcpServers": {{"p": {{}}}}, "enableAllProjectMcpServers": True, "kept": 1}}}}
        state.write_text(json.dumps(data))
        session = pathlib.Path.home() / ".claude" / "projects" / "run.jsonl"
        runs = session.read_text() if session.exists() else ""
        session.write_text(runs + "run\\n")
        # rewrite the private settings mid-run: refused, and so for the next run
        for name in ("settings.json", "settings.local.json"):
            try:
                (pathlib.Path.home() / ".claude" / name).write_text('{{"hooks": {{}}}}')
            except OSError:
                pass
        seen = {{"numStartups": data["numStartups"], "runs": runs, "planted": planted}}
        pathlib.Path("seen.json").write_text(json.dumps(seen))
        print({CLAUDE_INIT!r})
        print({CLAUDE_RESULT!r})
    """
    worker = rig.worker(probe, rig.script(script))
    _run(rig, probe, worker, "a1")
    assert json.loads((rig.target / "seen.json").read_text()) == {"numStartups": 8, "runs": "", "planted": []}
    _run(rig, probe, worker, "a2")
    # claude's own state persisted; the MCP servers planted in run 1 were gone in run 2
    seen = json.loads((rig.target / "seen.json").read_text())
    assert seen == {"numStartups": 9, "runs": "run\n", "planted": ["projects", "kept"]}
    assert json.loads((rig.private / "claude.json").read_text())["projects"]["/x"]["mcpServers"] == {"p": {}}
    assert snapshot(rig.home) == before
    assert json.loads((rig.private / "claude-dir" / "settings.json").read_text())["model"] == "opus"
    assert (rig.private / "claude-dir" / "settings.local.json").read_text() == "{}\n"
    assert not rig.marker.exists()

    worker.stop()
    result = discard_session(None, rig.session_dir, rig.session_dir.name)
    assert result.problems == ()
    assert not (rig.session_dir / CLI_STATE_FOLDER).exists()


def test_a_cli_reached_through_a_symlink_chain_under_tmp_starts_and_cannot_change_itself(probe, bwrap, outside):
    rig = Rig(outside, bwrap)
    install = Path(tempfile.mkdtemp(prefix="orch-npm-"))  # under /tmp: private inside the sandbox
    try:
        package = install / "node_modules" / "@acme" / "fake-cli"
        (package / "bin").mkdir(parents=True)
        (package / "package.json").write_text('{"name": "@acme/fake-cli"}')
        cli = package / "bin" / "cli.py"
        cli.write_text(
            f"#!{sys.executable}\n"
            + textwrap.dedent(f"""
            import json, pathlib
            results = {{}}
            for name, path in (("own_file", {str(cli)!r}), ("package", {str(package / "package.json")!r})):
                try:
                    pathlib.Path(path).write_text("changed")
                    results[name] = "ok"
                except OSError as exc:
                    results[name] = exc.strerror
            pathlib.Path("result.json").write_text(json.dumps(results))
            print({CLAUDE_INIT!r})
            print({CLAUDE_RESULT!r})
            """)
        )
        cli.chmod(0o755)
        (install / "node_modules" / ".bin").mkdir()
        (install / "node_modules" / ".bin" / "fake").symlink_to("../@acme/fake-cli/bin/cli.py")
        (install / "bin").mkdir()
        (install / "bin" / "fake").symlink_to(install / "node_modules" / ".bin" / "fake")  # a chain of two
        worker = rig.worker(probe, str(install / "bin" / "fake"))
        _run(rig, probe, worker, "a1")
        results = json.loads((rig.target / "result.json").read_text())
        assert results == {"own_file": "Read-only file system", "package": "Read-only file system"}
        assert (package / "package.json").read_text() == '{"name": "@acme/fake-cli"}'
        assert set(launch_path((str(install / "bin" / "fake"),), None)) >= {
            str(install / "bin"),
            str(install / "node_modules" / ".bin"),
            str(cli),
            str(package),
        }
    finally:
        shutil.rmtree(install, ignore_errors=True)


def test_private_binds_go_parent_first_and_their_settings_on_top(tmp_path):
    home, copy, workspace = tmp_path / "home", tmp_path / "ws" / "s" / "cli-state" / "claude", tmp_path / "ws"
    for folder in (home / ".claude" / "local", copy / "claude-dir"):
        folder.mkdir(parents=True)
    (copy / "claude-dir" / "settings.json").write_text("{}")
    confinement = Confinement(
        bwrap="bwrap",
        writable=(str(tmp_path / "target"),),
        hidden=(str(workspace),),
        readable=(str(home / ".claude" / "local"),),
        private=(
            PrivateBind(source=str(copy / "claude-dir"), dest=str(home / ".claude")),
            PrivateBind(
                source=str(copy / "claude-dir" / "settings.json"),
                dest=str(home / ".claude" / "settings.json"),
                writable=False,
            ),
        ),
    )
    assert mounts(confinement) == [
        ("hidden", "/tmp"),
        ("hidden", str(workspace)),
        ("private", str(home / ".claude")),
        ("private_read_only", str(home / ".claude" / "settings.json")),
        ("readable", str(home / ".claude" / "local")),
    ]
    argv = bwrap_argv(confinement, ["claude"])
    at = argv.index(str(home / ".claude"))
    assert argv[at - 2 : at + 1] == ["--bind", str(copy / "claude-dir"), str(home / ".claude")]
    settings = str(home / ".claude" / "settings.json")
    assert argv[argv.index(settings) - 2 : argv.index(settings) + 1] == [
        "--ro-bind",
        str(copy / "claude-dir" / "settings.json"),
        settings,
    ]


def test_token_data_keeps_only_the_known_fields_with_their_types():
    raw = {
        "claudeAiOauth": {
            "accessToken": "a",
            "refreshToken": 5,  # wrong type
            "expiresAt": True,  # a bool is no number here
            "scopes": ["x", 1],  # not all strings
            "subscriptionType": None,
            "helper": "rm -rf ~",
        },
        "mcpOAuth": {"srv": {"accessToken": "t"}},
    }
    kept, dropped = token_data(raw, CLAUDE_TOKENS)
    assert kept == {"claudeAiOauth": {"accessToken": "a", "subscriptionType": None}}
    assert sorted(dropped) == sorted(
        [
            "mcpOAuth",
            "claudeAiOauth.helper",
            "claudeAiOauth.refreshToken",
            "claudeAiOauth.expiresAt",
            "claudeAiOauth.scopes",
        ]
    )
    assert token_data(["not", "an", "object"], CLAUDE_TOKENS)[0] == {}
    kept, dropped = token_data({"OPENAI_API_KEY": "sk-attacker", "tokens": {"access_token": "n"}}, CODEX_TOKENS)
    assert kept == {"tokens": {"access_token": "n"}} and dropped == ["OPENAI_API_KEY"]  # the key never flows back
    user = {"OPENAI_API_KEY": "sk-user", "tokens": {"access_token": "o", "id_token": "i"}}
    assert merged(user, kept) == {"OPENAI_API_KEY": "sk-user", "tokens": {"access_token": "n", "id_token": "i"}}


def test_claude_project_folder_names_follow_claudes_rule():
    assert project_folder_name("/srv/repo") == "-srv-repo"
    assert project_folder_name("/a/b_c.d") == "-a-b-c-d"
    long = "/" + "x" * 250
    name = project_folder_name(long)
    assert name.startswith("-" + "x" * 199 + "-") and len(name) > 201


@pytest.mark.parametrize("agent", ["codex", "gemini"])
def test_refreshed_tokens_flow_back_only_when_the_run_refreshed_them(tmp_path, agent):
    home, target = tmp_path / "home", tmp_path / "target"
    target.mkdir()
    make_home(home, target, tmp_path / "marker")
    adapter = get_adapter(agent)
    env = {"HOME": str(home)}
    state = adapter.cli_state(env, (target,))
    (tmp_path / "session").mkdir(mode=0o700)
    private = PrivateCliState(agent, adapter, tmp_path / "session")
    binds = private.prepare(env, target)
    [place] = state.places
    [(name, _shape)] = place.credentials.items()
    user_file, copy_file = place.real / name, private.root / place.name / name
    assert copy_file.read_bytes() == user_file.read_bytes()
    assert [b.dest for b in binds if not b.writable] == [str(place.real / s.rstrip("/")) for s in place.settings]
    user_file.chmod(0o600)

    # Nothing refreshed in the run, while another session refreshed the user's file: untouched.
    newer = user_file.read_text().replace('"r"', '"r-newer"').replace('"1//r"', '"1//r-newer"')
    user_file.write_text(newer)
    assert private.return_tokens(env) == []
    assert user_file.read_text() == newer
    # ... and the next run starts from the user's newer tokens (the copy's may be spent).
    private.prepare(env, target)
    assert "r-newer" in copy_file.read_text()

    # The run refreshed its tokens and planted more: the tokens flow back, nothing else.
    data = json.loads(copy_file.read_text())
    if agent == "codex":
        data["tokens"]["access_token"] = "a-new"
        data["OPENAI_API_KEY"] = "sk-attacker"
        data["notify"] = ["touch", "x"]
    else:
        data["access_token"] = "ya29.new"
        data["mcpServers"] = {"p": {"command": "sh"}}
    copy_file.write_text(json.dumps(data))
    [said] = private.return_tokens(env)
    assert "dropped" in said and "sk-attacker" not in said
    back = json.loads(user_file.read_text())
    expected = json.loads(newer)
    if agent == "codex":
        expected["tokens"]["access_token"] = "a-new"
    else:
        expected["access_token"] = "ya29.new"
    assert back == expected  # the user's API key, and everything else of theirs, kept
    assert stat.S_IMODE(user_file.stat().st_mode) == 0o600
    assert private.return_tokens(env) == []  # given back once

    # A FIFO or a link put in the credentials' place is not read (and hangs nothing).
    copy_file.unlink()
    os.mkfifo(copy_file)
    assert private.return_tokens(env) == []
    copy_file.unlink()
    copy_file.symlink_to(home / ".claude" / ".credentials.json")
    assert private.return_tokens(env) == []
    assert json.loads(user_file.read_text()) == expected


def test_each_cli_names_its_state_where_its_environment_puts_it(tmp_path):
    home = {"HOME": str(tmp_path / "h")}
    claude = get_adapter("claude").cli_state({**home, "CLAUDE_CONFIG_DIR": str(tmp_path / "cfg")}, (tmp_path,))
    assert [p.real for p in claude.places] == [tmp_path / "cfg", tmp_path / "cfg" / ".claude.json"]
    assert f"projects/{project_folder_name(str(tmp_path))}" in claude.places[0].copied
    codex = get_adapter("codex").cli_state({**home, "CODEX_HOME": str(tmp_path / "ch")})
    assert [p.real for p in codex.places] == [tmp_path / "ch"]
    gemini = get_adapter("gemini").cli_state({**home, "GEMINI_CLI_HOME": str(tmp_path / "g")})
    assert [p.real for p in gemini.places] == [tmp_path / "g" / ".gemini"]
    plain = [p.real for a in ("claude", "codex", "gemini") for p in get_adapter(a).cli_state(home).places]
    assert plain == [tmp_path / "h" / n for n in (".claude", ".claude.json", ".codex", ".gemini")]
