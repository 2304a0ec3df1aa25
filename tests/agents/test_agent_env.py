"""An agent's CLI receives an allowlisted environment (``actors/agents/agent_env``).

The rule alone: each adapter's CLI gets what every CLI needs, its vendor's variables, the
demo scenario variables and the user's ``pass_env``; a GitHub token, cloud keys, the SSH
agent's and the desktop bus's sockets stay behind. Then a whole session whose claude is a
fake CLI that prints its environment (to stderr, kept in ``claude.stderr.log``) before it
runs the demo claude: what each of its runs received, and the start's log line.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.agents.agent_env import agent_env, describe_env
from meta_orchestrator.actors.agents.cli_launch import launch_spec
from meta_orchestrator.config.settings import AgentSettings, ConfigError, load_settings
from meta_orchestrator.messages.worker import StartAssignment
from tests.parrot.adapter import ParrotAdapter

SECRETS = {
    "GITHUB_TOKEN": "ghp_secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AWS_ACCESS_KEY_ID": "AKIASECRET",
    "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
    "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/0/bus",
    "DISPLAY": ":0",
    "XDG_RUNTIME_DIR": "/run/user/0",
    "NPM_TOKEN": "npm-secret",
    "GEMINI_CLI_IDE_AUTH_TOKEN": "ide-token",  # the IDE companion's, not the CLI's
    "GEMINI_SANDBOX": "docker",  # gemini's container sandbox would put stdin back on a command line
}
NEEDED = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/u",
    "USER": "u",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TERM": "xterm",
    "TMPDIR": "/tmp",
    "HTTPS_PROXY": "http://proxy:3128",
    "no_proxy": "localhost",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca.pem",
    "NODE_EXTRA_CA_CERTS": "/etc/ssl/certs/ca.pem",
    "ORCHESTRATE_DEMO_PACE": "0",
    "ORCHESTRATE_DEMO_SCENARIO_CLAUDE": "slow",
    "PYTHONPATH": "/opt/orchestrator/site",  # the hook and the demo agents import the package by it
}
VENDOR_KEYS = {
    "claude": {"ANTHROPIC_API_KEY": "sk-ant", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1", "IS_SANDBOX": "1"},
    "codex": {"CODEX_API_KEY": "sk-codex", "CODEX_HOME": "/home/u/.codex", "OPENAI_API_KEY": "sk-openai"},
    "gemini": {"GEMINI_API_KEY": "g-key", "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:1", "GEMINI_CLI_HOME": "/h"},
    "parrot": {"PARROT_KEY": "p-key"},
}
ENVIRON = {**SECRETS, **NEEDED, **{k: v for keys in VENDOR_KEYS.values() for k, v in keys.items()}}


def _settings(**changes: object) -> AgentSettings:
    return AgentSettings(share_min=0.1, share_max=0.5, **changes)  # type: ignore[arg-type]


def _adapter(name: str):
    return ParrotAdapter() if name == "parrot" else get_adapter(name)


@pytest.mark.parametrize("name", ["claude", "codex", "gemini", "parrot"])
def test_each_cli_gets_what_it_needs_and_its_vendors_variables_only(name: str) -> None:
    passed = agent_env(_adapter(name), _settings(), ENVIRON)
    others = {k for other, keys in VENDOR_KEYS.items() if other != name for k in keys}
    assert passed == {**NEEDED, **VENDOR_KEYS[name]}
    assert not set(SECRETS) & set(passed) and not others & set(passed)


def test_pass_env_adds_names_and_globs_case_sensitively() -> None:
    environ = {**ENVIRON, "MY_TOOL_TOKEN": "t", "MY_TOOL_URL": "u", "COMPANY_CA": "ca", "my_tool_lower": "l"}
    passed = agent_env(get_adapter("claude"), _settings(pass_env=("MY_TOOL_*", "COMPANY_CA")), environ)
    assert {"MY_TOOL_TOKEN", "MY_TOOL_URL", "COMPANY_CA"} <= set(passed)
    assert "my_tool_lower" not in passed and "GITHUB_TOKEN" not in passed


def test_claude_gets_a_cloud_providers_credentials_only_when_told_to_use_it() -> None:
    claude = get_adapter("claude")
    assert "AWS_SECRET_ACCESS_KEY" not in agent_env(claude, _settings(), ENVIRON)
    for off in ("0", "false", ""):
        assert "AWS_ACCESS_KEY_ID" not in agent_env(claude, _settings(), {**ENVIRON, "CLAUDE_CODE_USE_BEDROCK": off})
    bedrock = agent_env(claude, _settings(), {**ENVIRON, "CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": "eu-west-1"})
    assert {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_REGION"} <= set(bedrock)
    assert "GITHUB_TOKEN" not in bedrock


def test_codex_gets_the_key_variable_of_a_provider_its_extra_args_define() -> None:
    args = ("-c", "model_provider=mock", "-c", "model_providers.mock.env_key=MOCK_API_KEY")
    environ = {**ENVIRON, "MOCK_API_KEY": "m"}
    assert agent_env(get_adapter("codex"), _settings(extra_args=args), environ)["MOCK_API_KEY"] == "m"
    assert "MOCK_API_KEY" not in agent_env(get_adapter("codex"), _settings(), environ)


def test_the_launch_sets_configured_values_and_the_runs_markers_on_top(tmp_path: Path) -> None:
    settings = _settings(env={"GITHUB_TOKEN": "set-by-the-user", "EXTRA": "x"})
    spec = launch_spec(
        get_adapter("claude"),
        settings,
        StartAssignment(assignment_id="a", prompt="p"),
        session_id="s1",
        workdir=tmp_path,
        extra_dirs=(),
        base_env={**ENVIRON, "ORCHESTRATE_SESSION_ID": "outer", "ORCHESTRATE_WORKDIR": "/elsewhere"},
    )
    assert spec.env["GITHUB_TOKEN"] == "set-by-the-user" and spec.env["EXTRA"] == "x"  # [agents.x] env is explicit
    assert spec.env["ORCHESTRATE_SESSION_ID"] == "s1" and spec.env["ORCHESTRATE_WORKDIR"] == str(tmp_path)
    assert "AWS_SECRET_ACCESS_KEY" not in spec.env and "SSH_AUTH_SOCK" not in spec.env


def test_a_bad_pass_env_entry_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match=r"agents\.claude\.pass_env.*'MY VAR' is not a variable name"):
        load_settings(None, {"agents.claude.pass_env": ["MY VAR"]})


def test_the_log_line_names_what_passes_and_never_a_value() -> None:
    passed = agent_env(get_adapter("claude"), _settings(), ENVIRON)
    line = describe_env("claude", passed, ENVIRON)
    assert "ANTHROPIC_API_KEY" in line and "PATH" in line and f"({len(ENVIRON) - len(passed)} other" in line
    assert "GITHUB_TOKEN" not in line
    assert not any(value in line for value in ENVIRON.values() if len(value) > 3)
    configured = describe_env("claude", passed, ENVIRON, {"IS_SANDBOX": "1", "MY_URL": "http://x"})
    assert configured.endswith("; set by [agents.claude] env: IS_SANDBOX, MY_URL")


# -- a whole session: a fake claude prints the environment it was started with --------------------

ENV_LINE = "fake-cli-env "
FAKE_CLAUDE = f"""#!{sys.executable}
import json, os, sys
print({ENV_LINE!r} + json.dumps(dict(os.environ)), file=sys.stderr, flush=True)
os.execv(sys.executable, [sys.executable, "-m", "meta_orchestrator.actors.agents.demo", "claude", *sys.argv[1:]])
"""


def _target(root: Path) -> Path:
    target = root / "target"
    (target / "app").mkdir(parents=True)
    (target / "app" / "main.py").write_text("def handle(path):\n    return 404, 'not found'\n")
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", "start"],
    ):
        subprocess.run(cmd, cwd=target, check=True, capture_output=True, timeout=30)
    return target


@pytest.mark.session
def test_a_sessions_cli_receives_no_secret_but_its_key_and_what_pass_env_adds(tmp_path, demo_env, caplog):
    fake = tmp_path / "fake-claude"
    fake.write_text(FAKE_CLAUDE)
    fake.chmod(0o755)
    environ = {**demo_env, **SECRETS, "ANTHROPIC_API_KEY": "sk-ant-test", "MY_TOOL_TOKEN": "mine"}
    settings = load_settings(
        None,
        {
            "workspace": str(tmp_path / "ws"),
            "agents.claude.command": str(fake),
            "agents.claude.pass_env": ["MY_TOOL_*"],
            "agents.gemini.enabled": False,
            "agents.codex.enabled": False,
        },
    )
    caplog.set_level(logging.INFO, logger="meta_orchestrator.actors.app")
    options = LaunchRequest(
        task="Add a /health endpoint", target=_target(tmp_path), demo=False, dashboard=False, console=False, env=environ
    )
    assert run(settings, options) == 0
    (session,) = [p for p in (tmp_path / "ws").iterdir() if p.is_dir()]
    log = (session / "claude.stderr.log").read_text()
    seen = [json.loads(line[len(ENV_LINE) :]) for line in log.splitlines() if line.startswith(ENV_LINE)]
    assert len(seen) >= 2  # claude had every role: plan, design, implement, review
    for env in seen:
        assert not set(SECRETS) & set(env), sorted(set(SECRETS) & set(env))
        assert env["ANTHROPIC_API_KEY"] == "sk-ant-test" and env["MY_TOOL_TOKEN"] == "mine"
        assert env["PATH"] == environ["PATH"] and env["ORCHESTRATE_DEMO_PACE"] == "0"
        assert env["ORCHESTRATE_SESSION_ID"] == session.name
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("claude receives")]
    assert len(said) == 1 and "ANTHROPIC_API_KEY" in said[0] and "MY_TOOL_TOKEN" in said[0]
    assert "GITHUB_TOKEN" not in said[0] and "sk-ant-test" not in said[0]
