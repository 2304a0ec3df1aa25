"""What each adapter knows about its CLI, and the registry that makes a CLI known."""

from __future__ import annotations

from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters import registry
from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.recovery.error_patterns import builtin_patterns, compile_patterns
from meta_orchestrator.actors.recovery.preflight import proactive_fixes
from meta_orchestrator.config.settings import load_settings


def test_bypass_flags_are_recognised():
    assert get_adapter("claude").bypass_flags_in(["--dangerously-skip-permissions"])
    assert get_adapter("claude").bypass_flags_in(["--permission-mode=bypassPermissions"])
    assert get_adapter("codex").bypass_flags_in(["-s", "danger-full-access"])
    assert get_adapter("gemini").bypass_flags_in(["--approval-mode", "yolo"])
    assert not get_adapter("codex").bypass_flags_in(["-s", "workspace-write"])


@pytest.mark.parametrize("name", ["claude", "codex", "gemini"])
def test_the_flags_an_adapter_names_are_the_ones_its_command_line_uses(name, tmp_path):
    adapter = get_adapter(name)
    extra = tmp_path / "extra"
    extra.mkdir()
    argv = adapter.build_launch(LaunchSpec(executable=(name,), prompt="hi", workdir=tmp_path, extra_dirs=(extra,))).argv
    assert argv[argv.index(adapter.grant_dir_flag) + 1] == str(extra)
    if adapter.trust_flag is not None:
        assert adapter.trust_flag in argv
    assert not adapter.bypass_flags_in(list(argv))  # never switched off by the orchestrator
    assert adapter.package and adapter.install_hint() == f"npm install -g {adapter.package}"


def test_every_row_of_a_cli_is_its_own_and_names_a_known_class():
    from meta_orchestrator.actors.recovery.error_patterns import CAUSE_ORDER, GENERIC_PATTERNS

    for name in registry.agent_names():
        rows = get_adapter(name).error_patterns
        assert rows and {r.cli for r in rows} == {name}
        assert {r.cause for r in rows} <= set(CAUSE_ORDER)
    assert len(builtin_patterns()) == len(GENERIC_PATTERNS) + sum(
        len(get_adapter(n).error_patterns) for n in registry.agent_names()
    )


def test_a_user_pattern_must_name_a_known_cli():
    assert compile_patterns([{"cli": "codex", "cause": "auth", "match": "nope"}])[0].source == "config"
    with pytest.raises(ValueError, match="cli 'nosuch' is not one of \\*, claude, codex, gemini"):
        compile_patterns([{"cli": "nosuch", "cause": "auth", "match": "nope"}])


def test_registering_checks_the_name():
    class Named:
        name = "Not A Name"

    with pytest.raises(ValueError, match="must match"):
        registry.register(Named())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        registry.register(get_adapter("codex"))
    with pytest.raises(ValueError, match="built in"):
        registry.unregister("codex")


def _settings(tmp_path: Path, **agents: object):
    return load_settings(None, {"workspace": str(tmp_path / "ws"), **agents})


def test_preflight_drops_the_flags_each_cli_refuses(tmp_path):
    settings = _settings(
        tmp_path,
        **{
            "agents.codex.extra_args": ["--full-auto", "-a", "never", "--json"],
            "agents.gemini.extra_args": ["--yolo", "--debug"],
            "agents.claude.extra_args": ["--dangerously-skip-permissions"],
            "agents.claude.allow_bypass": True,
        },
    )
    fixed, records = proactive_fixes(settings, tmp_path, {}, euid=0)
    assert fixed.agents["codex"].extra_args == ("--json",)
    assert fixed.agents["gemini"].extra_args == ("--debug",)
    assert fixed.agents["claude"].extra_args == ()
    by = {(r.agent, r.cause): r for r in records}
    assert by[("codex", "bad_flag")].outcome == "fixed_before_launch"
    assert "--full-auto, -a never" in by[("codex", "bad_flag")].action
    assert by[("claude", "root_bypass")].outcome == "fixed_before_launch"
    assert by[("gemini", "repo_trust")].outcome == "checked"
    assert by[("codex", "repo_trust")].evidence.endswith("not a git repository")
    assert ("claude", "repo_trust") not in by  # claude has no folder check
    # Not root, or inside a declared sandbox: claude keeps its flag.
    for euid, env in ((1000, {}), (0, {"IS_SANDBOX": "1"})):
        kept, _ = proactive_fixes(settings, tmp_path, env, euid=euid)
        assert kept.agents["claude"].extra_args == ("--dangerously-skip-permissions",)
