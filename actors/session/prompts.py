"""The prompts the coordinator sends, and reading the architect's plan out of its answer.

Every prompt starts with header lines (``Session:``, ``Assignment:``, ``Role:``, ``Kind:``,
``Task:``) so an agent, a log reader and the demo agents all know what is asked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from meta_orchestrator.actors.adapters.protocol import REPORTING_PROTOCOL
from meta_orchestrator.messages.session import AssignmentRecord, Plan, PlannedAssignment
from pydantic import ValidationError

ROLE_DESCRIPTIONS = {
    "architect": "Architecture & design: shape the solution, write the design others build on.",
    "implementer": "Implementation: write the code and its tests in the target repository.",
    "reviewer": "Problem solving & review: check the work, find defects, fix small problems.",
}

PLAN_SCHEMA_HINT = """\
{"summary": "one paragraph",
 "assignments": [
   {"id": "design", "role": "architect", "title": "...", "instructions": "...",
    "depends_on": [], "weight": 45},
   {"id": "implement", "role": "implementer", "title": "...", "instructions": "...",
    "depends_on": ["design"], "weight": 45},
   {"id": "review", "role": "reviewer", "title": "...", "instructions": "...",
    "depends_on": ["implement"], "weight": 10}]}"""


def _header(session_id: str, assignment_id: str, role: str, kind: str, task: str) -> str:
    return f"Session: {session_id}\nAssignment: {assignment_id}\nRole: {role}\nKind: {kind}\nTask: {task}\n"


def plan_prompt(
    session_id: str,
    task: str,
    target: str,
    shares: dict[str, tuple[float, float]],
    roles: dict[str, str],
    parallel: dict[str, int] | None = None,
) -> str:
    """Ask the architect for a structured plan; ``parallel``: how many assignments each
    agent may run at once (``[agents.<name>] max_parallel``)."""
    share_lines = "\n".join(
        f"- {role} ({roles.get(role, '?')}): {ROLE_DESCRIPTIONS[role]} Target share of the work: "
        f"{int(shares[roles[role]][0] * 100)}-{int(shares[roles[role]][1] * 100)}%."
        for role in ROLE_DESCRIPTIONS
        if role in roles and roles[role] in shares
    )
    return (
        _header(session_id, "plan", "architect", "plan", task)
        + f"\nYou are the architect of a team of three coding agents working in {target}.\n"
        "Break the task into assignments for these roles:\n"
        f"{share_lines}\n\n"
        f"{_parallel_lines(roles, parallel or {})}"
        "Answer with ONE fenced ```json block holding the plan and nothing else of importance:\n"
        f"{PLAN_SCHEMA_HINT}\n"
        "Rules: ids are short words ([A-Za-z0-9_.-]); depends_on names ids of this plan; "
        "no cycles; weight is the assignment's share of the effort; 2 to 8 assignments. "
        "Do not change any file while planning.\n"
    )


def _parallel_lines(roles: dict[str, str], parallel: dict[str, int]) -> str:
    """What the architect is told of the runs each role's agent may have at once."""
    lines = [
        f"- {role} ({agent}): up to {parallel.get(agent, 1)} assignment(s) at once"
        for role, agent in roles.items()
        if role in ROLE_DESCRIPTIONS
    ]
    if not any(parallel.get(agent, 1) > 1 for agent in roles.values()):
        return ""
    return (
        "Assignments run at once when none depends on another, each in its own checkout, merged "
        "afterwards; give independent ones no depends_on between them, and keep them to separate files:\n"
        + "\n".join(lines)
        + "\n\n"
    )


def plan_retry_prompt(session_id: str, task: str, error: str) -> str:
    """Ask again, quoting why the last plan was refused."""
    return (
        _header(session_id, "plan", "architect", "plan", task) + "\nYour previous plan was rejected by the validator:\n"
        f"{error}\n\nAnswer again with ONE fenced ```json block in this shape:\n"
        f"{PLAN_SCHEMA_HINT}\n"
    )


def assignment_prompt(
    session_id: str,
    task: str,
    assignment: AssignmentRecord,
    plan_summary: str,
    finished: Iterable[AssignmentRecord],
    notes: Iterable[str] = (),
) -> str:
    """The prompt for one assignment, with what the work it depends on produced."""
    context = []
    for done in finished:
        files = ", ".join(_shown(f, done.workdir) for f in done.files_written[:20]) or "none reported"
        answer = done.final_text.strip()
        if len(answer) > 4000:
            answer = answer[:4000] + "\n[... cut: the rest is in the session log]"
        context.append(
            f"### {done.id} ({done.role}, {done.agent}): {done.title}\n"
            f"Files written: {files}\nResult:\n{answer or '(no text)'}\n"
        )
    extra = "\n".join(f"- {n}" for n in notes)
    return (
        _header(session_id, assignment.id, assignment.role, "work", task)
        + f"\nYou are the {assignment.role} in a team of three coding agents. "
        f"{ROLE_DESCRIPTIONS[assignment.role]}\n"
        f"Overall plan: {plan_summary or '(none)'}\n\n"
        f"## Your assignment: {assignment.title}\n{assignment.instructions}\n\n"
        + ("## Work already done\n" + "\n".join(context) + "\n" if context else "")
        + (f"## Notes from the orchestrator\n{extra}\n\n" if extra else "")
        + "Work in the current directory (the target repository). Finish with a short summary "
        "of what you did and which files you changed.\n\n" + REPORTING_PROTOCOL
    )


def _shown(path: str, workdir: str | None) -> str:
    """A file another assignment wrote, relative to its checkout: the same file is in this
    run's folder (its checkout started from the session branch the other one merged into)."""
    if workdir and path.startswith(workdir.rstrip("/") + "/"):
        return path[len(workdir.rstrip("/")) + 1 :]
    return path


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)


def extract_json_objects(text: str) -> list[Any]:
    """JSON objects found in an answer: fenced blocks first, then balanced ``{...}`` spans."""
    found: list[Any] = []
    for block in _FENCE.findall(text):
        try:
            found.append(json.loads(block))
        except ValueError:
            continue
    if found:
        return found
    decoder = json.JSONDecoder()
    index = 0
    while (start := text.find("{", index)) != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
            continue
        found.append(obj)
        index = end
    return found


class PlanRejected(ValueError):
    """The architect's answer held no valid plan; the message is fit to send back to it."""


def parse_plan(text: str) -> Plan:
    """The plan in an architect's answer.

    Raises:
        PlanRejected: no JSON object, or none that validates; says why.
    """
    candidates = [c for c in extract_json_objects(text) if isinstance(c, dict)]
    if not candidates:
        raise PlanRejected("the answer contains no JSON object")
    errors = []
    for candidate in sorted(candidates, key=lambda c: "assignments" not in c):
        try:
            return Plan.model_validate(candidate)
        except ValidationError as exc:
            errors.append(
                "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}" for e in exc.errors())
            )
    raise PlanRejected(errors[0])


def fallback_plan(task: str) -> Plan:
    """The default breakdown when the architect gives no valid plan: design, implement, review."""
    return Plan(
        summary=f"Default breakdown for: {task}",
        assignments=(
            PlannedAssignment(
                id="design",
                role="architect",
                title="Design the change",
                instructions=f"Design how to do this: {task}. Write the design to "
                "docs/DESIGN.md: components, files to touch, interfaces, risks.",
                weight=45,
            ),
            PlannedAssignment(
                id="implement",
                role="implementer",
                title="Implement the design",
                instructions=f"Implement: {task}. Follow docs/DESIGN.md; add tests.",
                depends_on=("design",),
                weight=45,
            ),
            PlannedAssignment(
                id="review",
                role="reviewer",
                title="Review and fix",
                instructions="Review the implementation against the design; fix small "
                "problems; write findings to docs/REVIEW.md.",
                depends_on=("implement",),
                weight=10,
            ),
        ),
    )
