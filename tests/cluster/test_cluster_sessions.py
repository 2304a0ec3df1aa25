"""Whole demo sessions with ``--cluster`` on a real local Ray cluster: a head that offers no
agent slot and a node that does, every server on 127.0.0.1 (tests/ray_cluster.py), started
once for this module. Every agent CLI runs under a Ray worker of the slot node, in a checkout
of its own made from a git bundle; the session's files stay with the driver (this process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

try:
    import ray  # noqa: F401 - is Ray installed? (the tests skip, or fail in CI, without it)
except ImportError:
    if os.environ.get("CI"):
        raise  # CI installs the cluster extra: its absence is a failure there
    pytest.skip("ray is not installed (pip install -e '.[cluster]')", allow_module_level=True)

from meta_orchestrator.actors.app.system import PreflightError, LaunchRequest, run, start, stop_all
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.agents.demo.common import PLAN_PARTS_ENV
from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.session import ControlRequested, GetSessionState
from meta_orchestrator.messages.worker import GetWorkerState
from tests.conftest import PROJECT_ROOT, session_store, wait_for
from tests.ray_cluster import DrivenCluster, RayNode, driven_cluster

TASK = "Add a /health endpoint"


@pytest.fixture(scope="module")
def cluster() -> Iterator[DrivenCluster]:
    yield from driven_cluster(3, num_cpus=2)


def _settings(tmp_path: Path, cluster: DrivenCluster, **overrides: object) -> Any:
    return load_settings(
        None,
        {
            "workspace": str(tmp_path / "ws"),
            "cluster.address": cluster.local.address,
            "cluster.token_file": str(cluster.local.token_file),
            **overrides,
        },
    )


def _options(demo_env: dict[str, str]) -> LaunchRequest:
    return LaunchRequest(task=TASK, target=None, demo=True, dashboard=False, console=False, env=demo_env)


def _only_session(tmp_path: Path) -> Path:
    [session] = [p for p in (tmp_path / "ws").iterdir() if p.is_dir()]
    return session


def _event_files(session: Path) -> list[Path]:
    """Every agent event file of the session: the assignments' and the peer reviews'."""
    found = [session / f"{agent}.jsonl" for agent in ("gemini", "claude", "codex")]
    return [p for p in (*found, *sorted(session.glob("reviews/*/*.jsonl"))) if p.exists()]


def _placements(records: list[dict[str, Any]]) -> list[tuple[str | None, str | None]]:
    """(the node id it was placed on, or None) for each run in an event file, in order."""
    runs: list[tuple[str | None, str | None]] = []
    for record in records:
        kind = record["payload"].get("kind")
        if kind == "launch":
            runs.append((record.get("assignment_id"), None))
        elif kind == "placed":
            runs[-1] = (runs[-1][0], record["payload"]["details"]["node_id"])
    return runs


def _state(session: Path) -> dict[str, Any]:
    return json.loads((session / "state.json").read_text())


@pytest.mark.session
def test_a_demo_session_runs_every_cli_on_the_slot_node_and_keeps_everything(cluster, tmp_path, demo_env):
    started = time.monotonic()
    code = run(_settings(tmp_path, cluster), _options(demo_env))
    took = time.monotonic() - started
    session = _only_session(tmp_path)
    state = _state(session)
    assert code == 0 and state["status"] == "completed", state.get("summary")
    # state.json names the node of every assignment: the one node that offers slots.
    assert state["assignments"] and {a["node"]["node_id"] for a in state["assignments"]} == {cluster.slot_node_id}
    assert all(a["node"]["node_ip"] == "127.0.0.1" for a in state["assignments"])
    runs = 0
    for path in _event_files(session):
        result = read_jsonl(path)
        records = result.records
        assert not result.torn_tail and result.bad_lines == 0, path
        # Every event is in the driver's file, numbered without a gap or a repeat.
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1)), path
        placed = _placements(records)
        assert placed and all(node == cluster.slot_node_id for _, node in placed), (path, placed)
        assert any(r["type"] == "milestone" for r in records), path
        runs += len(placed)
    assert runs >= 4  # planning, the three assignments, and their peers' reviews
    # The work came back by git and was merged: the demo agents' files are on the session
    # branch (the target's own tree is the user's and stays as it was), none on the nodes.
    target = Path(state["target"])
    branch = f"orchestrate/{state['session_id']}"
    on_branch = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", branch],
        cwd=session_store(session),  # the session's store: the user's repository gets it at apply
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"docs/DESIGN.md", "docs/REVIEW.md"} <= set(on_branch)
    assert not (target / "docs" / "DESIGN.md").exists()
    implement = next(a for a in state["assignments"] if a["agent"] == "claude")
    # The files it says it wrote are named as the driver sees them: in its checkout.
    checkout = session / "checkouts" / implement["id"]
    assert implement["files_written"] and all(Path(f).is_relative_to(checkout) for f in implement["files_written"])
    assert all(Path(f).relative_to(checkout).as_posix() in on_branch for f in implement["files_written"])
    refs = subprocess.run(["git", "for-each-ref"], cwd=target, capture_output=True, text=True, check=True).stdout
    assert "refs/orchestrate/remote" not in refs and "refs/heads/orchestrate/" not in refs  # nothing left there
    wait_for(lambda: not cluster.scratch_left(), timeout=30, message="every run's checkout on the node removed")
    assert not _processes_of(state["session_id"])  # no CLI of the session runs on any node
    print(f"\ncluster session: {runs} remote runs, completed in {took:.1f}s")


def _processes_of(session_id: str) -> list[str]:
    """Processes on this machine (every node of the test cluster) that carry the session's marker."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("ORCHESTRATE_SESSION_ID") == session_id:
                found.append(f"{proc.pid} {' '.join(proc.cmdline())[:100]}")
        except (psutil.Error, OSError):
            continue
    return found


def _running_remote(running: Any, agent: str) -> Any:
    def placed() -> Any:
        snap = running.workers[agent].ask(GetWorkerState(), timeout=5)
        return snap if snap.status == "running" and snap.node and snap.pid else None

    return wait_for(placed, timeout=120, message=f"{agent} running on a cluster node")


def _status(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "gone"


@pytest.mark.session
def test_pause_resume_and_stop_reach_the_remote_run(cluster, tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK"] = "hang"
    started: list[Any] = []
    try:
        running = start(_settings(tmp_path, cluster), _options(demo_env), started)
        snap = _running_remote(running, "claude")
        assert cluster.slot_node_id[:12] not in snap.node  # a person's label: host (address)
        cli = psutil.Process(snap.pid)
        # The CLI is a child of a Ray worker of the slot node, in a process group of its own.
        assert os.getsid(cli.ppid()) == cluster.slots.sid and os.getpgid(cli.pid) == cli.pid
        running.coordinator.tell(ControlRequested(action="pause", agent="claude", source="test"))
        wait_for(lambda: _status(cli.pid) == psutil.STATUS_STOPPED, timeout=30, message="the remote CLI stopped")
        assert running.workers["claude"].ask(GetWorkerState(), timeout=5).status == "paused"
        running.coordinator.tell(ControlRequested(action="resume", agent="claude", source="test"))
        wait_for(lambda: _status(cli.pid) not in (psutil.STATUS_STOPPED, "gone"), timeout=30, message="running again")
        running.coordinator.tell(ControlRequested(action="stop", source="test"))
        ended = running.ended.get(timeout=60)
        assert ended.status == "stopped" and ended.exit_code == 130
        wait_for(lambda: _status(cli.pid) in ("gone", psutil.STATUS_ZOMBIE), timeout=30, message="the remote CLI gone")
        records = read_jsonl(running.session_dir / "claude.jsonl").records
        kinds = [r["payload"].get("kind") for r in records]
        assert {"placed", "paused", "resumed", "stopping"} <= set(kinds)
    finally:
        stop_all(started)
    wait_for(lambda: not cluster.scratch_left(), timeout=30, message="the run's checkout on the node removed")


@pytest.mark.session
def test_a_memory_limit_stops_a_remote_run_from_the_nodes_samples(cluster, tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "memory_hog"
    demo_env["ORCHESTRATE_DEMO_HOG_MB"] = "640"
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.1"
    code = run(_settings(tmp_path, cluster, **{"limits.agents.claude.max_rss_mb": 200}), _options(demo_env))
    session = _only_session(tmp_path)
    state = _state(session)
    assert code == 1 and state["status"] == "failed"
    implement = next(a for a in state["assignments"] if a["agent"] == "claude")
    assert implement["status"] == "failed" and "rss limit" in implement["error"]
    assert implement["node"]["node_id"] == cluster.slot_node_id
    limits = [d for d in state["decisions"] if d.get("kind") == "limit_exceeded"]
    assert any(d["limit"] == "rss" and d["action"] == "stop" and d["observed"] > 200 for d in limits), limits
    # The monitor read claude's tree from the samples its node sent, not from this machine.
    lines = (session / "resources.jsonl").read_text().splitlines()
    samples = [a for line in lines for a in json.loads(line)["agents"]]
    claude = [s for s in samples if s["agent"] == "claude"]
    assert claude and all(s["node"] for s in claude) and max(s["rss_bytes"] for s in claude) > 200 * 1024 * 1024


def _waiting_notice(session: Path, agent: str) -> str | None:
    for path in _event_files(session):
        if path.stem == agent:
            for record in read_jsonl(path).records:
                if record["payload"].get("kind") == "waiting_for_slot":
                    return record["payload"]["text"]
    return None


@pytest.mark.session
def test_a_run_waits_for_a_slot_then_a_node_killed_mid_run_is_recovered_on_another(cluster, tmp_path, demo_env):
    # Claude's runs ask for slots no node offers yet: they wait, and say so. Then two nodes that
    # offer them join; its run lands on one, which is killed mid-run.
    settings = _settings(
        tmp_path,
        cluster,
        **{"cluster.resources": {"claude": {"claude_node": 1}}, "agents.claude.env": {"ORCHESTRATE_DEMO_PACE": "0.4"}},
    )
    extra: list[RayNode] = []
    started: list[Any] = []
    try:
        running = start(settings, _options(demo_env), started)
        notice = wait_for(lambda: _waiting_notice(running.session_dir, "claude"), timeout=120, message="a wait")
        assert notice == "waiting for an agent slot: no node of the cluster offers claude_node"
        extra = [cluster.add_node(name, {"agent_slot": 1, "claude_node": 1}) for name in ("node-a", "node-b")]
        ids = {cluster.local.node_id(node): node for node in extra}
        snap = _running_remote(running, "claude")
        state = wait_for(
            lambda: next(
                (
                    a
                    for a in running.coordinator.ask(GetSessionState(), timeout=5).assignments
                    if a.agent == "claude" and a.node
                ),
                None,
            ),
            timeout=60,
            message="claude's node in the session state",
        )
        doomed = ids[state.node.node_id]
        wait_for(
            lambda: len(read_jsonl(running.session_dir / "claude.jsonl").records) > 3,
            timeout=60,
            message="claude's first lines recorded",
        )
        before = read_jsonl(running.session_dir / "claude.jsonl").records
        killed_at = time.monotonic()
        doomed.kill()
        ended = running.ended.get(timeout=240)
        took = time.monotonic() - killed_at
    finally:
        stop_all(started)
        for node in extra:
            node.kill()
    assert ended.status == "completed", ended.summary
    final = _state(running.session_dir)
    recovery = [r for r in final["recoveries"] if r.get("cause") == "node_lost"]
    assert len(recovery) == 1 and recovery[0]["action"] == "relaunch" and recovery[0]["outcome"] == "recovered"
    implement = next(a for a in final["assignments"] if a["agent"] == "claude")
    survivor = next(i for i, node in ids.items() if node is not doomed)
    assert implement["status"] == "completed" and implement["node"]["node_id"] == survivor
    assert implement["attempts"] == 2
    records = read_jsonl(running.session_dir / "claude.jsonl").records
    # Nothing recorded before the loss is lost, and the retry's events follow without a gap.
    assert records[: len(before)] == before
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert any(r["payload"].get("kind") == "node_lost" for r in records)
    assert [node for _, node in _placements(records)][-2:] == [state.node.node_id, survivor]
    assert not psutil.pid_exists(snap.pid) or _status(snap.pid) == psutil.STATUS_ZOMBIE
    # The dashboard was told: a claude worker waiting, with the session's history to show it.
    history = [json.loads(line) for line in (running.session_dir / "history.jsonl").read_text().splitlines()]
    shown = [h["data"]["snapshot"] for h in history if h["fact"] == "WorkerStateChanged"]
    assert any(w["agent"] == "claude" and w["status"] == "waiting" for w in shown)
    assert any(w["agent"] == "claude" and w["status"] == "running" and w["node"] for w in shown)
    print(f"\nnode killed mid-run: the session completed {took:.1f}s later")


@pytest.mark.session
def test_an_agents_parallel_runs_are_spread_over_the_nodes(cluster, tmp_path, demo_env):
    # Two nodes, each with room for both of claude's runs (2 slots): Ray's default would fill
    # one first; max_parallel 2 spreads them.
    extra = [cluster.add_node(name, {"agent_slot": 2, "par_node": 2}) for name in ("par-a", "par-b")]
    try:
        settings = _settings(
            tmp_path,
            cluster,
            **{
                "cluster.agents": ["claude"],
                "cluster.resources": {"claude": {"par_node": 1}},
                "agents.claude.max_parallel": 2,
                "review.enabled": False,
            },
        )
        env = {**demo_env, PLAN_PARTS_ENV: "2", "ORCHESTRATE_DEMO_PACE": "0.3"}
        code = run(settings, _options(env))
    finally:
        for node in extra:
            node.kill()
    state = _state(_only_session(tmp_path))
    assert code == 0, state.get("summary")
    nodes = {a["id"]: a["node"]["node_id"] for a in state["assignments"]}
    assert sorted(nodes) == ["part1", "part2"]
    assert len(set(nodes.values())) == 2 and set(nodes.values()) <= {cluster.local.node_id(n) for n in extra}


def test_cluster_without_ray_is_a_clear_error(tmp_path):
    # A Python where `import ray` fails, as without the extra installed.
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from meta_orchestrator.actors.app.launcher import main\n"
        f"sys.exit(main([{TASK!r}, '--demo', '--no-dashboard', '--cluster', '127.0.0.1:1', "
        f"'--workspace', {str(tmp_path / 'ws')!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'meta-orchestrator[cluster]'" in done.stderr and "--cluster needs Ray" in done.stderr


@pytest.mark.session
def test_cluster_refuses_a_target_that_is_no_git_repository(cluster, tmp_path, demo_env):
    target = tmp_path / "plain"
    target.mkdir()
    options = LaunchRequest(task=TASK, target=target, demo=True, dashboard=False, console=False, env=demo_env)
    with pytest.raises(PreflightError, match="needs the target to be a git repository"):
        run(_settings(tmp_path, cluster), options)
