"""The review engine's pure parts: the seed's decision policy, verdict parsing, the prompt.

Nothing here touches an actor, a file or a process, so every row of the policy is a
table-driven test.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from meta_orchestrator.actors.session.prompts import extract_json_objects
from meta_orchestrator.messages.base import AgentName
from meta_orchestrator.messages.review import (
    Decision,
    Finding,
    ReviewAnswer,
    ReviewCompleted,
    ReviewDecision,
    ReviewTrigger,
)
from meta_orchestrator.messages.worker import AssignmentFinished

VERDICTS = ("approve", "concern", "blocker")
_SYNONYMS = {
    "approve": "approve",
    "approved": "approve",
    "approval": "approve",
    "ok": "approve",
    "lgtm": "approve",
    "pass": "approve",
    "accept": "approve",
    "accepted": "approve",
    "concern": "concern",
    "concerns": "concern",
    "concerned": "concern",
    "warning": "concern",
    "changes_requested": "concern",
    "request_changes": "concern",
    "minor": "concern",
    "blocker": "blocker",
    "blocked": "blocker",
    "block": "blocker",
    "blocking": "blocker",
    "reject": "blocker",
    "rejected": "blocker",
    "fail": "blocker",
    "stop": "blocker",
}
_BARE_VERDICT = re.compile(r'"?verdict"?\s*[:=]\s*"?(?P<v>[A-Za-z_]+)"?', re.IGNORECASE)
SUMMARY_LIMIT = 2000
FINDINGS_LIMIT = 50


# -- the policy ------------------------------------------------------------------------------


def decide(
    answers: Sequence[ReviewAnswer], when_no_reviewers: Decision = "LOG_WARNING", unavailable: Iterable[str] = ()
) -> ReviewDecision:
    """The seed's decision tree, in its order.

    any blocker -> STOP_AND_ESCALATE; two or more concerns -> PAUSE_AND_CLARIFY; one concern
    -> LOG_WARNING; all approve -> CONTINUE. With no answer at all, ``when_no_reviewers`` is
    chosen and the reasoning says so: it is never reported as an approval.
    """
    counts = Counter[str](a.verdict for a in answers)
    tally = {v: counts[v] for v in VERDICTS}
    said = "; ".join(_who_said(a) for a in answers)
    if not answers:
        missing = ", ".join(unavailable) or "none configured"
        return ReviewDecision(
            decision=when_no_reviewers,
            counts=tally,
            no_reviewers=True,
            reasoning=(
                f"no peer reviewer was available ({missing}); chose {when_no_reviewers} "
                "by the review.when_no_reviewers setting. The work is unreviewed: this "
                "is not an approval."
            ),
        )
    if tally["blocker"]:
        decision: Decision = "STOP_AND_ESCALATE"
        rule = f"{tally['blocker']} blocker(s): any blocker stops and escalates"
    elif tally["concern"] >= 2:
        decision, rule = (
            "PAUSE_AND_CLARIFY",
            f"{tally['concern']} concerns: two or more pause and ask for clarification",
        )
    elif tally["concern"] == 1:
        decision, rule = "LOG_WARNING", "one concern: logged as a warning, the work continues"
    else:
        decision, rule = "CONTINUE", f"all {len(answers)} reviewer(s) approve"
    return ReviewDecision(decision=decision, counts=tally, reasoning=f"{rule}. {said}")


def skipped_review(
    review_id: str,
    triggers: Sequence[ReviewTrigger],
    author: AgentName | None,
    gate: bool,
    reason: str,
    reasoning: str,
    round_: int = 0,
) -> ReviewCompleted:
    """A review no peer was asked for: CONTINUE, and the reasoning says it is not an approval."""
    return ReviewCompleted(
        review_id=review_id,
        assignment_id=triggers[0].assignment_id,
        author=author,
        triggers=tuple(triggers),
        gate=gate,
        skipped=reason,
        round=round_,
        decision=ReviewDecision(decision="CONTINUE", reasoning=reasoning),
    )


def _who_said(answer: ReviewAnswer) -> str:
    why = f" ({answer.reason})" if answer.reason else ""
    summary = answer.summary.strip().replace("\n", " ")
    if len(summary) > 200:
        summary = summary[:197] + "..."
    return f"{answer.agent}: {answer.verdict}{why}" + (f" - {summary}" if summary else "")


# -- verdict parsing -------------------------------------------------------------------------


def normalise_verdict(value: Any) -> str | None:
    """approve/concern/blocker for a verdict word or a common synonym, else None."""
    if not isinstance(value, str):
        return None
    word = value.strip().lower().replace("-", "_").replace(" ", "_")
    return _SYNONYMS.get(word)


def _findings(value: Any) -> tuple[Finding, ...]:
    found = []
    items = value if isinstance(value, list) else ([value] if isinstance(value, (dict, str)) else [])
    for item in items[:FINDINGS_LIMIT]:
        if isinstance(item, str):
            found.append(Finding(text=item[:SUMMARY_LIMIT]))
            continue
        if not isinstance(item, dict):
            continue
        line = item.get("line")
        if isinstance(line, str) and line.strip().isdigit():
            line = int(line.strip())
        text = item.get("text") or item.get("message") or item.get("description") or ""
        found.append(
            Finding(
                severity=str(item.get("severity") or "info")[:40],
                file=str(item["file"])[:500] if item.get("file") else None,
                line=line if isinstance(line, int) and not isinstance(line, bool) else None,
                text=str(text)[:SUMMARY_LIMIT],
            )
        )
    return tuple(found)


def parse_verdict(agent: AgentName, text: str, returncode: int | None = 0, duration_s: float = 0.0) -> ReviewAnswer:
    """A peer's answer text as a verdict. Robust to fences, prose around, missing fields.

    The last JSON object carrying a recognisable ``verdict`` wins (an answer may quote
    an example first). A missing summary or findings is fine; a missing or unknown verdict
    makes the answer a ``concern`` whose reason says so, never an approval.
    """
    candidates = [o for o in extract_json_objects(text or "") if isinstance(o, dict)]
    with_verdict = [o for o in candidates if normalise_verdict(o.get("verdict")) is not None]
    if with_verdict:
        obj = with_verdict[-1]
        summary = obj.get("summary") or obj.get("reason") or obj.get("comment") or ""
        return ReviewAnswer(
            agent=agent,
            verdict=normalise_verdict(obj["verdict"]),
            summary=str(summary)[:SUMMARY_LIMIT],
            findings=_findings(obj.get("findings")),
            returncode=returncode,
            duration_s=duration_s,
        )
    bare = list(_BARE_VERDICT.finditer(text or ""))
    for match in reversed(bare):
        if (verdict := normalise_verdict(match.group("v"))) is not None:
            # Outside a JSON object a verdict may only make things stricter: an approval
            # the parser could not read properly is a concern, never an approval.
            reason = (
                "unparseable answer: 'approve' found only in prose or broken JSON; counted as a concern"
                if verdict == "approve"
                else "verdict read from text, not from a JSON object"
            )
            return ReviewAnswer(
                agent=agent,
                verdict="concern" if verdict == "approve" else verdict,
                summary=_prose(text),
                reason=reason,
                parsed=False,
                returncode=returncode,
                duration_s=duration_s,
            )
    if candidates:
        keys = ", ".join(sorted({k for o in candidates for k in o}))[:200]
        reason = f"unparseable answer: JSON without a valid verdict (keys: {keys})"
    elif (text or "").strip():
        reason = "unparseable answer: no JSON verdict in the reply"
    else:
        reason = "unparseable answer: the reply was empty"
    return ReviewAnswer(
        agent=agent,
        verdict="concern",
        summary=_prose(text),
        reason=reason,
        parsed=False,
        returncode=returncode,
        duration_s=duration_s,
    )


def failed_answer(
    agent: AgentName, reason: str, returncode: int | None = None, duration_s: float = 0.0
) -> ReviewAnswer:
    """A reviewer that timed out, crashed or could not start: a concern with that reason."""
    return ReviewAnswer(
        agent=agent, verdict="concern", reason=reason, parsed=False, returncode=returncode, duration_s=duration_s
    )


def answer_of_run(finished: AssignmentFinished) -> ReviewAnswer:
    """A peer's answer from its finished read-only run: its verdict, or a concern saying why
    there is none (stopped, never started, failed with nothing said). A failed run that still
    printed ``approve`` is not counted as an approval."""
    agent, returncode, duration_s = finished.agent, finished.returncode, finished.duration_s
    outcome = finished.outcome
    if finished.stopped_by:
        return failed_answer(
            agent, f"reviewer timed out or was stopped ({finished.stopped_by})", returncode, duration_s
        )
    if finished.spawn_error:
        return failed_answer(agent, f"reviewer could not start: {finished.spawn_error}", None, duration_s)
    if not outcome.success and not outcome.final_text.strip():
        return failed_answer(agent, f"reviewer run failed: {outcome.error or returncode}", returncode, duration_s)
    answer = parse_verdict(agent, outcome.final_text, returncode, duration_s)
    if not outcome.success and answer.verdict == "approve":
        return failed_answer(
            agent,
            f"reviewer run failed after answering approve ({outcome.error}); not counted as approval",
            returncode,
            duration_s,
        )
    return answer


def _prose(text: str) -> str:
    cleaned = re.sub(r"```.*?```", "", text or "", flags=re.DOTALL).strip()
    return cleaned[:SUMMARY_LIMIT]


# -- the request ------------------------------------------------------------------------------

VERDICT_SCHEMA = (
    '{"verdict": "approve|concern|blocker", "summary": "one paragraph", '
    '"findings": [{"severity": "low|medium|high", "file": "path", "line": 1, '
    '"text": "what is wrong and why"}]}'
)


def review_prompt(session_id: str, review_id: str, task: str, context: dict[str, Any]) -> str:
    """The prompt a peer gets: the headers the agents key on, the context, the JSON asked for.

    NUL characters are removed: a command line cannot carry them.
    """
    return _review_prompt(session_id, review_id, task, context).replace("\0", "")


def _review_prompt(session_id: str, review_id: str, task: str, context: dict[str, Any]) -> str:
    triggers = "\n".join(
        f"- {t['kind']}" + (f" by {t['agent']}" if t.get("agent") else "") + (f": {t['text']}" if t.get("text") else "")
        for t in context.get("triggers", ())
    )
    assignment = context.get("assignment") or {}
    events = "\n".join(f"- [{e['type']}] {e['text']}" for e in context.get("recent_events", ()))
    change = context.get("change") or {}
    return (
        f"Session: {session_id}\nAssignment: {review_id}\nRole: reviewer\nKind: peer_review\n"
        f"Task: {task}\n\n"
        "You are a peer reviewer in a team of three coding agents. Review the work described "
        "below. Do NOT change any file: read what you need, then answer.\n\n"
        f"## Why this review\n{triggers or '- requested'}\n\n"
        + (
            f"## The assignment under review: {assignment.get('id')} ({assignment.get('role')}, "
            f"by {assignment.get('agent')})\n{assignment.get('title', '')}\n"
            f"{assignment.get('instructions', '')}\n\n"
            if assignment
            else ""
        )
        + (f"## The author's final answer\n{assignment.get('final_text')}\n\n" if assignment.get("final_text") else "")
        + (f"## Recent events of the author\n{events}\n\n" if events else "")
        + f"## The change in the target ({change.get('how', 'unknown')})\n"
        f"{change.get('text') or '(no change found)'}\n\n"
        "## Your answer\nAnswer with ONE fenced ```json block in exactly this shape:\n"
        f"{VERDICT_SCHEMA}\n"
        "Use blocker only for a defect that must stop the work, concern for something that "
        "needs attention, approve when the work is sound.\n"
    )


def trigger_line(trigger: ReviewTrigger) -> str:
    """A short human line for one trigger (console, question text)."""
    who = f" by {trigger.agent}" if trigger.agent else ""
    where = f" on {trigger.assignment_id}" if trigger.assignment_id else ""
    text = f": {trigger.text[:120]}" if trigger.text else ""
    return f"{trigger.kind}{who}{where}{text}"


def dump_answer(answer: ReviewAnswer, raw_text: str) -> dict[str, Any]:
    """What ``<agent>.answer.json`` holds: the parsed verdict and the text it came from."""
    data = answer.model_dump(mode="json")
    data["raw_text"] = raw_text[-20_000:]
    return json.loads(json.dumps(data))
