"""The ``orchestrate`` command.

orchestrate "Add user authentication" --target ./app [--no-dashboard] [--demo] ...
orchestrate sessions             list the sessions in the workspace
orchestrate show <session_id>    print one session
orchestrate resume <session_id>  continue a session (its orchestrator died, or it waited for answers)
orchestrate answer <session_id> <question_id> <text>  answer a question of a waiting session
orchestrate serve                every session of the workspace, live or past, in one page
orchestrate apply <session_id>   bring the session's branch from its store and merge it into your current branch
                                 (a folder without git: write the changed files into it)
orchestrate discard <session_id> remove the session's store (its branch) and checkouts
orchestrate agents [--json]      every known agent CLI: installed, version, credentials, sandbox, protocols
orchestrate mcp                  an MCP server on stdio: other tools start and drive the workspace's sessions
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import pykka.debug

from meta_orchestrator.actors.app.launch_request import LaunchRequest, from_command_line
from meta_orchestrator.actors.app.lossy_stderr import LossyStderr
from meta_orchestrator.actors.files.session_files import open_private
from meta_orchestrator.config.settings import ConfigError, Settings, load_settings

SUBCOMMANDS = ("sessions", "show", "resume", "answer", "serve", "apply", "discard", "agents", "mcp")
EXIT_USAGE = 2
SUBCOMMAND_HELP = """other commands (each takes --workspace DIR and --config FILE):
  orchestrate sessions                                list the sessions in the workspace
  orchestrate show <session_id> [--json]              print one session, its open questions included
  orchestrate show <session_id> --follow [--last N]   print its events as they come, until it ends
  orchestrate answer <session_id> <question_id> TEXT  answer a question of a waiting session (yes/no
                                                      for confirmations)
  orchestrate resume <session_id>                     continue a session: recorded answers first
  orchestrate serve [--port N]                        every session, live or past, in one page
                                                      (127.0.0.1:8100), with replay
  orchestrate apply <session_id> [--squash]           bring branch orchestrate/<session_id> from the session's
                                                      store into your repository and merge it into your
                                                      current branch (refused, with the reason, if your
                                                      uncommitted changes touch its files or it conflicts);
                                                      a folder without git: its changed files are written
                                                      into it (refused if you changed one of them meanwhile)
  orchestrate agents [--json]                         every known agent CLI: installed (path), version,
                                                      credentials found (which variable or file), sandbox
                                                      ready, protocols, and why when something is missing
  orchestrate discard <session_id>                    remove the session's store (its branch and objects)
                                                      and checkouts; your .git (or folder) stays as it was
  orchestrate mcp                                     an MCP server on stdio: other tools (Claude Code, Codex,
                                                      any MCP client) start, follow, answer and apply sessions

exit codes: 0 completed, 1 failed, 2 could not start (or bad input), 3 waiting for answers
(nobody could answer a question: see 'orchestrate show'), 130 stopped"""


def _session_flags() -> argparse.ArgumentParser:
    """The flags ``orchestrate`` and ``orchestrate resume`` share: how this run is watched and
    answered, not what the session is (a resumed one keeps its task, target and settings)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--no-dashboard", action="store_true", help="no web dashboard; console only")
    p.add_argument(
        "--port",
        type=int,
        metavar="N",
        help="dashboard port (default: [web] port of the config, 8000; on resume, the session's own)",
    )
    p.add_argument(
        "--host", metavar="HOST", help="dashboard interface (default 127.0.0.1; another needs --allow-remote)"
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="let --host be an address other machines can reach (the token then travels in clear; "
        "an SSH tunnel to 127.0.0.1 is safer)",
    )
    p.add_argument(
        "--next-free-port", action="store_true", help="if the dashboard port is taken, use the next free one"
    )
    p.add_argument(
        "--exit-when-done", action="store_true", help="leave as soon as the session ends, even with the dashboard"
    )
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    p.add_argument(
        "--unattended",
        action="store_true",
        help="when nobody can answer a question, take its default (clarification: continue; escalation: "
        "stop; confirmation: no) instead of saving the session and exiting 3 ([questions] unattended)",
    )
    return p


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orchestrate",
        description="Run gemini (design), claude (implementation) and codex (review) as one team on a task.",
        epilog=SUBCOMMAND_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_session_flags()],
    )
    p.add_argument("task", help="what the agents should do, in plain words")
    p.add_argument(
        "--target",
        type=Path,
        metavar="DIR",
        help="the repository or folder to work in (must exist; a folder without git is imported into the "
        "session's own repository; with --demo it defaults to a small demo app made in the session folder)",
    )
    p.add_argument("--workspace", type=Path, metavar="DIR", help="where session folders go (default ./workspace)")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file (see docs/configuration.md)")
    p.add_argument("--demo", action="store_true", help="use the built-in demo agents instead of the real CLIs")
    p.add_argument(
        "--include-uncommitted",
        action="store_true",
        help="start the session from your uncommitted changes too (a snapshot; your working tree and "
        "index stay as they are); without it the session starts from HEAD and they are not part of it",
    )
    p.add_argument(
        "--in-place",
        action="store_true",
        help="no isolation: the agents write straight into --target, with no branch, no checkout and nothing "
        "to undo or discard (without it every session works on a branch of its own)",
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the agent CLIs on the nodes of this Ray cluster that offer agent slots "
        "(host:port or auto; [cluster] address); needs pip install 'meta-orchestrator[cluster]'",
    )
    p.add_argument(
        "--cluster-token-file",
        metavar="PATH",
        type=Path,
        help="the cluster's token, in a file only you can read ([cluster] token_file); "
        "without it the token is taken from RAY_AUTH_TOKEN, else from ~/.ray/auth_token",
    )
    return p


def _session_id_arg(value: str) -> str:
    """argparse's type for a session id: one folder name, else exit 2 before anything is read."""
    from meta_orchestrator.messages.ids import InvalidId, check_session_id

    try:
        return check_session_id(value)
    except InvalidId as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _question_id_arg(value: str) -> str:
    """argparse's type for a question id."""
    from meta_orchestrator.messages.ids import InvalidId, check_question_id

    try:
        return check_question_id(value)
    except InvalidId as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workspace_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"orchestrate {prog}")
    p.add_argument("--workspace", type=Path, metavar="DIR", help="where session folders go (default ./workspace)")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    return p


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its name ("orchestrate", then each subcommand): what --help
    prints, and what the command reference in docs/ is generated from."""
    subcommands = {
        "sessions": _sessions_parser,
        "show": _show_parser,
        "answer": _answer_parser,
        "resume": _resume_parser,
        "serve": _serve_parser,
        "apply": _apply_parser,
        "discard": _discard_parser,
        "agents": _agents_parser,
        "mcp": _mcp_parser,
    }
    return {"orchestrate": _run_parser(), **{name: build() for name, build in subcommands.items()}}


def setup_logging(verbose: bool) -> Any:
    """Console logging now; the session's orchestrator.log once the folder exists."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    logging.getLogger("pykka").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # `kill -USR1 <pid>` logs every thread's stack: how to see where a stuck session waits.
    signal.signal(signal.SIGUSR1, pykka.debug.log_thread_tracebacks)

    def to_file(session_dir: Path) -> None:
        open_private(session_dir / "orchestrator.log").close()  # 0600 before the handler appends
        handler = logging.FileHandler(session_dir / "orchestrator.log", encoding="utf-8")
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
        root.addHandler(handler)

    return to_file


def _load(config: Path | None, overrides: Mapping[str, Any]) -> Settings:
    try:
        return load_settings(config, overrides)
    except ConfigError as exc:
        print(f"orchestrate: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``orchestrate`` console script."""
    stderr = sys.stderr
    if stderr is not None:  # a stderr nobody reads loses what is said there, not the run
        sys.stderr = LossyStderr(stderr)
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        sys.stderr = stderr


def _main(args: list[str]) -> int:
    if args and args[0] in SUBCOMMANDS:
        return _subcommand(args[0], args[1:])
    opts = _run_parser().parse_args(args)
    request = from_command_line(
        opts,
        task=opts.task,
        target=opts.target,
        demo=opts.demo,
        include_uncommitted=opts.include_uncommitted,
        in_place=opts.in_place,
    )
    return _run_session(opts.config, request)


def _run_session(config: Path | None, request: LaunchRequest) -> int:
    """Load the settings, set up logging and run one session (new or resumed) to its end."""
    settings = _load(config, request.settings_overrides)
    # The modules' objects live as long as the process: no collection need walk them, during
    # the imports (a tenth of their time) or after (frozen).
    gc.disable()
    try:
        from meta_orchestrator.actors.app.prepare import forget_version_checks, start_version_checks

        start_version_checks(settings, request)  # the CLIs answer while the rest is imported
        from meta_orchestrator.actors.app.system import PreflightError, run
    finally:
        gc.freeze()
        gc.enable()

    log_to_file = setup_logging(request.verbose)
    try:
        return run(settings, request, log_setup=log_to_file)
    except PreflightError as exc:
        print(f"orchestrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        forget_version_checks()
        # Every actor has stopped: what is left is freed at exit. Frozen, it is not walked
        # by the interpreter's last full collections first (up to a second on a busy machine,
        # between Ctrl-C and the prompt); nothing is lost, the files are closed already.
        gc.freeze()


def _resume_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orchestrate resume", parents=[_session_flags()])
    p.description = (
        "Continue a session whose orchestrator died, or that waited for answers: recorded answers first. "
        "It keeps the task, target and settings of its first start (launch.json); these flags apply over them."
    )
    p.add_argument("session_id", type=_session_id_arg, help="the session's folder name in the workspace")
    p.add_argument("--workspace", type=Path, metavar="DIR", help="where session folders go (default ./workspace)")
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML settings file (only its workspace counts on resume)"
    )
    return p


def _resume(args: list[str]) -> int:
    opts = _resume_parser().parse_args(args)
    return _run_session(opts.config, from_command_line(opts, task="", target=None, resume=opts.session_id))


def _answer_parser() -> argparse.ArgumentParser:
    p = _workspace_parser("answer")
    p.description = "Answer a question of a waiting session; `orchestrate resume` applies the answer."
    p.add_argument("session_id", type=_session_id_arg, help="the session's folder name in the workspace")
    p.add_argument("question_id", type=_question_id_arg, help="the question's id, as `orchestrate show` prints it")
    p.add_argument("text", nargs="+", help="the answer (yes or no for a confirmation)")
    return p


def _answer(args: list[str]) -> int:
    opts = _answer_parser().parse_args(args)
    settings = _load(opts.config, {"workspace": str(opts.workspace)} if opts.workspace else {})
    folder = settings.workspace.expanduser().resolve() / opts.session_id
    workspace_flag = f" --workspace {opts.workspace}" if opts.workspace else ""
    return answer_command(folder, opts.session_id, opts.question_id, " ".join(opts.text), workspace_flag)


def answer_command(
    folder: Path, session_id: str, question_id: str, text: str, workspace_flag: str = "", wait_s: float | None = None
) -> int:
    """Record an answer for a session that is not running; `orchestrate resume` applies it.
    ``wait_s``: how long to wait for its launcher's end work (None: files.end_lock's 60 s)."""
    import psutil

    from meta_orchestrator.actors.files.end_lock import END_WAIT_S
    from meta_orchestrator.actors.history.resume import AnswerError, record_answer
    from meta_orchestrator.actors.files.session_files import read_json
    from meta_orchestrator.messages.session import TERMINAL_STATUSES

    try:
        state = read_json(folder / "state.json")
    except FileNotFoundError:
        print(f"orchestrate: no session {session_id} in {folder.parent}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"orchestrate: {folder / 'state.json'} is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    pid = state.get("orchestrator_pid")
    if state.get("status") not in TERMINAL_STATUSES and pid and pid != os.getpid() and psutil.pid_exists(pid):
        print(
            f"orchestrate: session {session_id} is running (orchestrator pid {pid}); "
            "answer on its console or dashboard",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        recorded = record_answer(folder, question_id, text, END_WAIT_S if wait_s is None else wait_s)
    except AnswerError as exc:
        print(f"orchestrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verdict = {True: " (yes)", False: " (no)", None: ""}[recorded["approve"]]
    print(f"recorded the answer to {question_id}{verdict}: {recorded['answer']}")
    if recorded["still_open"]:
        print(f"still open: {', '.join(recorded['still_open'])}")
    print(f"continue with: orchestrate resume {session_id}{workspace_flag}")
    return 0


def _serve_parser() -> argparse.ArgumentParser:
    p = _workspace_parser("serve")
    p.description = "Every session of the workspace, live or past, in one page, with replay."
    p.add_argument("--port", type=int, default=8100, metavar="N", help="port on 127.0.0.1 (0: a free one)")
    p.add_argument(
        "--host", default="127.0.0.1", metavar="HOST", help="a loopback address (use an SSH tunnel from elsewhere)"
    )
    return p


def _serve(args: list[str]) -> int:
    from meta_orchestrator.webui.serve import ServeError, SessionsServer

    opts = _serve_parser().parse_args(args)
    settings = _load(opts.config, {"workspace": str(opts.workspace)} if opts.workspace else {})
    workspace = settings.workspace.expanduser().resolve()
    try:
        server = SessionsServer(workspace, host=opts.host, port=opts.port, web=settings.web).start()
    except ServeError as exc:
        print(f"orchestrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"sessions: {server.url}", file=sys.stderr, flush=True)
    print(f"serving the sessions of {workspace}; Ctrl-C ends", file=sys.stderr, flush=True)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        while not done.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


def _apply_parser() -> argparse.ArgumentParser:
    p = _workspace_parser("apply")
    p.description = (
        "Bring the session's commits into your current branch (a fast-forward, or a merge commit). "
        "Refused, with nothing changed, when it would conflict, touch your uncommitted files, or "
        "go to another branch than the one the session started from. Applying again does nothing. "
        "A merge or squash commit is signed when your git config sets commit.gpgSign. A session "
        "started with --include-uncommitted comes in as one commit of its own changes, never the "
        "snapshot of your uncommitted files. A session on a folder without git writes its changed "
        "files into the folder instead, after checking you did not change them meanwhile (refused, "
        "nothing written, if you did)."
    )
    p.add_argument("session_id", type=_session_id_arg, help="the session's folder name in the workspace")
    p.add_argument("--squash", action="store_true", help="one commit instead of a merge")
    p.add_argument(
        "--onto",
        metavar="BRANCH",
        help="apply to BRANCH, the current branch, though the session started from another",
    )
    p.add_argument(
        "--no-sign",
        action="store_true",
        help="make the merge or squash commit unsigned though commit.gpgSign is set (when signing fails)",
    )
    p.add_argument(
        "--target",
        type=Path,
        metavar="FOLDER",
        help="apply in this worktree of the session's repository (e.g. when the one it started in is gone)",
    )
    return p


def _apply(args: list[str]) -> int:
    from meta_orchestrator.actors.workspaces.workspace_commands import apply_command

    opts = _apply_parser().parse_args(args)
    settings = _load(opts.config, {"workspace": str(opts.workspace)} if opts.workspace else {})
    folder = settings.workspace.expanduser().resolve() / opts.session_id
    return apply_command(
        folder, opts.session_id, opts.squash, onto=opts.onto, sign=not opts.no_sign, target=opts.target
    )


def _discard_parser() -> argparse.ArgumentParser:
    p = _workspace_parser("discard")
    p.description = "Remove the session's store (its branch and objects) and checkouts; your .git stays as it was."
    p.add_argument("session_id", type=_session_id_arg, help="the session's folder name in the workspace")
    return p


def _discard(args: list[str]) -> int:
    from meta_orchestrator.actors.workspaces.workspace_commands import discard_command

    opts = _discard_parser().parse_args(args)
    settings = _load(opts.config, {"workspace": str(opts.workspace)} if opts.workspace else {})
    return discard_command(settings.workspace.expanduser().resolve() / opts.session_id, opts.session_id)


def _subcommand(name: str, args: list[str]) -> int:
    commands = {"resume": _resume, "serve": _serve, "answer": _answer, "sessions": _sessions, "agents": _agents}
    run = {**commands, "apply": _apply, "discard": _discard, "mcp": _mcp}.get(name, _show)
    return run(args)


def _mcp_parser() -> argparse.ArgumentParser:
    p = _workspace_parser("mcp")
    p.description = (
        "An MCP server on stdin/stdout over the workspace's sessions (docs/mcp.md): start_session, "
        "list_sessions, session_status, session_events, answer_question, control_session, apply_session, "
        "discard_session. A session started through it runs as its own process, headless, and outlives "
        "the server; --config is the settings file its sessions start with."
    )
    return p


def _mcp(args: list[str]) -> int:
    opts = _mcp_parser().parse_args(args)
    settings = _load(opts.config, {"workspace": str(opts.workspace)} if opts.workspace else {})
    workspace = settings.workspace.expanduser().resolve()
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        from meta_orchestrator.actors.mcp.server import serve  # the SDK loads for this command only
    except (OSError, ImportError) as exc:
        print(f"orchestrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return serve(workspace, opts.config.resolve() if opts.config else None)


def _agents_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orchestrate agents")
    p.description = (
        "Every known agent CLI: installed or not (its path), version, credentials found or not (which "
        "variable or file, never the value), OS sandbox ready or not, protocols, and why when something is missing."
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file ([agents.<name>] command)")
    p.add_argument("--json", action="store_true", help="one JSON list, for tools")
    return p


def _agents(args: list[str]) -> int:
    from meta_orchestrator.actors.recovery.cli_survey import render_text, survey

    opts = _agents_parser().parse_args(args)
    reports = survey(_load(opts.config, {}), dict(os.environ))
    if opts.json:
        print(json.dumps([r.as_json() for r in reports], indent=2))
    else:
        print(render_text(reports))
    return 0


def _sessions_parser() -> argparse.ArgumentParser:
    p = _workspace_parser("sessions")
    p.description = "List the sessions in the workspace: id, status, start time, task and branch."
    return p


def _sessions(args: list[str]) -> int:
    from meta_orchestrator.actors.workspaces.workspace_commands import branch_note
    from meta_orchestrator.actors.files.session_files import iter_sessions

    opts = _sessions_parser().parse_args(args)
    settings = _load(opts.config, {"workspace": str(opts.workspace)} if opts.workspace else {})
    rows = list(iter_sessions(settings.workspace.expanduser().resolve()))
    if not rows:
        print(f"no sessions in {settings.workspace}")
        return 0
    for folder, state in rows:
        if state is None:
            print(f"{folder.name}  (state.json unreadable)")
            continue
        print(
            f"{state['session_id']}  {state.get('status', '?'):<9}  "
            f"{state.get('created_at', '')[:19]}  {state.get('task', '')[:60]}{branch_note(folder)}"
        )
    return 0


def _show_parser() -> argparse.ArgumentParser:
    p = _workspace_parser("show")
    p.description = "Print one session, its open questions included, or follow its events live."
    p.add_argument("session_id", type=_session_id_arg, help="the session's folder name in the workspace")
    p.add_argument("--json", action="store_true", help="print state.json as it is")
    p.add_argument("--follow", action="store_true", help="print the session's events as they come, until it ends")
    p.add_argument("--last", type=int, default=20, metavar="N", help="with --follow: begin with the last N events")
    return p


def _show(args: list[str]) -> int:
    from meta_orchestrator.actors.files.session_files import read_json

    opts = _show_parser().parse_args(args)
    settings = _load(opts.config, {"workspace": str(opts.workspace)} if opts.workspace else {})
    folder = settings.workspace.expanduser().resolve() / opts.session_id
    if opts.follow:
        from meta_orchestrator.actors.console.follow import follow

        if not (folder / "state.json").is_file():
            print(f"orchestrate: no session {opts.session_id} in {settings.workspace}", file=sys.stderr)
            return EXIT_USAGE
        return follow(folder, sys.stdout, backlog=max(opts.last, 0))
    try:
        state = read_json(folder / "state.json")
    except FileNotFoundError:
        print(f"orchestrate: no session {opts.session_id} in {settings.workspace}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"orchestrate: {folder / 'state.json'} is not valid JSON: {exc}", file=sys.stderr)
        return 1
    if opts.json:
        print(json.dumps(state, indent=2))
        return 0
    return _print_session(folder, state, opts.workspace)


def _print_session(folder: Path, state: dict[str, Any], workspace: Path | None) -> int:
    print(f"session  {state['session_id']}  ({state.get('status')}, exit {state.get('exit_code')})")
    print(f"task     {state.get('task')}")
    print(f"target   {state.get('target')}")
    print(f"plan     {state.get('plan_source')}: {state.get('plan_summary', '')[:200]}")
    for a in state.get("assignments", []):
        err = f" - {a['error']}" if a.get("error") else ""
        print(f"  {a['id']:<14} {a['agent']:<7} {a['status']:<10} {a.get('busy_s', 0):>7.1f}s  {a['title'][:50]}{err}")
    for s in state.get("shares", []):
        print(
            f"  share {s['agent']:<7} planned {s['planned']:.0%}  busy {s['actual_by_time']:.0%}"
            f"  target {s['target_min']:.0%}-{s['target_max']:.0%}"
        )
    from meta_orchestrator.actors.history.resume import ResumeError, recorded_answers

    try:
        recorded = recorded_answers(folder)
    except ResumeError as exc:
        print(f"orchestrate: {exc}", file=sys.stderr)
        recorded = {}
    for agent, why in (state.get("agents_out") or {}).items():
        print(f"  out    {agent}: {why[:300]}")
    open_questions = [q for q in state.get("questions", []) if q.get("status") == "open"]
    if open_questions:
        print("open questions")
    for q in open_questions:
        given = recorded.get(q["id"])
        answer = f"  [answered, applied on resume: {given['answer']!r}]" if given else ""
        print(f"  ? {q['kind']:<13} {q['id']}  from {q.get('asked_by')}: {q.get('text', '')[:300]}{answer}")
    if open_questions and state.get("status") == "waiting":
        where = f" --workspace {workspace}" if workspace else ""
        print(f"answer with: orchestrate answer {state['session_id']} <question_id> <text>{where}")
        print(f"then: orchestrate resume {state['session_id']}{where}")
    events = sorted(p.name for p in folder.glob("*.jsonl"))
    print(f"files    {', '.join(events)}")
    if state.get("summary"):
        print("summary\n  " + state["summary"].replace("\n", "\n  "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
