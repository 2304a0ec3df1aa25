"""A small ACP agent of the tests' own: JSON-RPC 2.0 over stdio, one message a line.

``python tests/agents/acp_agent.py`` answers ``initialize``, ``session/new``, ``session/load``
(it replays one earlier chunk) and ``session/prompt``. A prompt with the orchestrator's
headers (Kind:, Role:) gets the demo agents' work (``actors.agents.demo.common.run``: a plan,
files written, a review), rendered as ACP ``session/update`` notifications; writes are made
without asking, shell commands only after ``session/request_permission``. Keyword lines in a
prompt script one run for the tests:

* ``ACP:bash <command>``: ask, then run ``sh -c <command>`` in the session's folder if allowed
* ``ACP:write <path>`` / ``ACP:ask-write <path>``: write the file (the second asks first)
* ``ACP:plan``: a plan update
* ``ACP:unknown-request``: ask the client something it does not offer, say what came back
* ``ACP:garbage``: print a line that is not JSON
* ``ACP:die``: exit 3 in the middle of the prompt
* ``ACP:stop <reason>``: end the turn with that stop reason
* ``ACP:auth-error``: answer the prompt with ACP's authentication error
* ``ACP:commands <KB>``: an ``available_commands_update`` shaped as qwen's: each command with
  its description, input hint and ``_meta``, and skills whose bodies add up to KB kilobytes

``--version`` prints its version (preflight asks for it).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.agents.demo.acp import AcpTurn, serve
from meta_orchestrator.actors.agents.demo.common import Command, marker, run

VERSION = "acp-fixture 1.0.0"
_KEYWORD = re.compile(r"^ACP:([a-z-]+)[ \t]*(.*?)[ \t]*$", re.MULTILINE)


class AcpDemo(AcpTurn):
    """One prompt turn: the demo's work, or the scripted keywords; writes unasked unless ``ACP:ask-write``."""

    def __init__(self, name: str, prompt: str, cwd: Path, session_id: str, request_id: Any, ask_writes: bool) -> None:
        super().__init__("acp", prompt, cwd, session_id, request_id, ask_writes)

    # -- a scripted turn ------------------------------------------------------------------------

    def play(self) -> int:
        if self.headers.get("kind") or self.headers.get("role"):
            return run(self)  # the orchestrator's own prompts: the demo agents' work
        self.start()
        for keyword, argument in _KEYWORD.findall(self.prompt):
            if self.keyword(keyword, argument):
                return 0
        self.say("All done.\n" + marker("milestone", "scripted turn finished", progress=100))
        return self.finish(self.last_text)

    def keyword(self, keyword: str, argument: str) -> bool:
        """One scripted step; True when it ended the turn."""
        if keyword == "bash":
            self.say(f"Running `{argument}`.\n" + marker("progress", "running a command", progress=50))
            self.shell(Command(argument, ["sh", "-c", argument], writes=True))
        elif keyword in ("write", "ask-write"):
            self.write(
                self.cwd / argument, f"written by the ACP fixture: {argument}\n", ask_first=keyword == "ask-write"
            )
        elif keyword == "plan":
            entries = [
                {"content": "look", "priority": "high", "status": "completed"},
                {"content": "write", "priority": "medium", "status": "pending"},
            ]
            self.update({"sessionUpdate": "plan", "entries": entries})
        elif keyword == "unknown-request":
            answer = self.ask("fs/mystery", {"sessionId": self.session_id})
            self.say(f"The client answered: {json.dumps(answer.get('error') or answer.get('result'))}\n")
        elif keyword == "garbage":
            self.raw(b"this line is not JSON-RPC\n")
        elif keyword == "die":
            self.say("I am about to crash.\n")
            os._exit(3)
        elif keyword == "stop":
            self.finish(self.last_text, argument or "refusal")
            return True
        elif keyword == "auth-error":
            self.fail("auth_error")
            return True
        elif keyword == "commands":
            self.update(commands_update(int(argument)))
        return False


def commands_update(skills_kb: int) -> dict[str, Any]:
    """What qwen 0.24 sends after ``session/new``: its slash commands, and in ``_meta`` every
    skill with its whole body (about 560 KB from a real install)."""
    commands = [
        {
            "name": name,
            "description": f"{name}: what the command does, in a sentence or two",
            "input": {"hint": "[args]"},
            "_meta": {"source": "builtin", "supportedModes": ["interactive", "acp"], "subcommands": []},
        }
        for name in ("init", "summary", "compress", "memory", "tools", "review")
    ]
    skills = [f"skill-{i}" for i in range(skills_kb)]
    details = [{"name": n, "description": f"{n} skill", "body": "s" * 1024, "level": "user"} for n in skills]
    return {
        "sessionUpdate": "available_commands_update",
        "availableCommands": commands,
        "_meta": {"availableSkills": skills, "availableSkillDetails": details},
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["--version"]:
        print(VERSION)
        sys.exit(0)
    sys.exit(serve("acp-fixture", VERSION, AcpDemo, ask_writes=False, set_model=False))
