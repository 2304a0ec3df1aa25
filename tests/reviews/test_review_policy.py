"""The seed's decision policy, row by row, and robust verdict parsing (pure functions)."""

from __future__ import annotations

import pytest

from meta_orchestrator.actors.reviews.review_policy import (
    decide,
    failed_answer,
    parse_verdict,
    review_prompt,
)
from meta_orchestrator.messages.review import ReviewAnswer


def _answers(*verdicts: str) -> list[ReviewAnswer]:
    agents = ("gemini", "codex", "claude")
    return [ReviewAnswer(agent=agents[i], verdict=v, summary=f"{v} by {agents[i]}") for i, v in enumerate(verdicts)]


@pytest.mark.parametrize(
    "verdicts,expected",
    [
        # any blocker -> STOP_AND_ESCALATE (whatever else is said)
        (("blocker",), "STOP_AND_ESCALATE"),
        (("blocker", "approve"), "STOP_AND_ESCALATE"),
        (("approve", "blocker"), "STOP_AND_ESCALATE"),
        (("blocker", "concern", "concern"), "STOP_AND_ESCALATE"),
        (("blocker", "blocker"), "STOP_AND_ESCALATE"),
        # two or more concerns -> PAUSE_AND_CLARIFY
        (("concern", "concern"), "PAUSE_AND_CLARIFY"),
        (("concern", "concern", "approve"), "PAUSE_AND_CLARIFY"),
        (("concern", "concern", "concern"), "PAUSE_AND_CLARIFY"),
        # one concern -> LOG_WARNING
        (("concern",), "LOG_WARNING"),
        (("concern", "approve"), "LOG_WARNING"),
        (("approve", "concern", "approve"), "LOG_WARNING"),
        # all approve -> CONTINUE
        (("approve",), "CONTINUE"),
        (("approve", "approve"), "CONTINUE"),
        (("approve", "approve", "approve"), "CONTINUE"),
    ],
)
def test_decision_tree(verdicts, expected):
    decision = decide(_answers(*verdicts))
    assert decision.decision == expected
    assert decision.no_reviewers is False
    assert sum(decision.counts.values()) == len(verdicts)
    for answer in _answers(*verdicts):  # the reasoning says who said what
        assert f"{answer.agent}: {answer.verdict}" in decision.reasoning


@pytest.mark.parametrize("fallback", ["LOG_WARNING", "PAUSE_AND_CLARIFY", "CONTINUE"])
def test_no_reviewers_is_the_configured_choice_and_never_an_approval(fallback):
    decision = decide([], fallback, ["claude disabled"])
    assert decision.decision == fallback and decision.no_reviewers
    assert "not an approval" in decision.reasoning and "claude disabled" in decision.reasoning
    assert decision.counts == {"approve": 0, "concern": 0, "blocker": 0}


def test_contradictory_verdicts_follow_the_strictest_row():
    decision = decide(_answers("approve", "blocker"))
    assert decision.decision == "STOP_AND_ESCALATE"
    assert "gemini: approve" in decision.reasoning and "codex: blocker" in decision.reasoning


@pytest.mark.parametrize(
    "reason",
    ["reviewer timed out after 600s", "reviewer crashed: exit 1", "reviewer could not start: executable not found"],
)
def test_failed_reviewers_count_as_concerns(reason):
    one = failed_answer("codex", reason)
    assert one.verdict == "concern" and one.reason == reason and not one.parsed
    assert (
        decide([one, *_answers("approve")[:0], ReviewAnswer(agent="claude", verdict="approve")]).decision
        == "LOG_WARNING"
    )
    both = [failed_answer("codex", reason), failed_answer("claude", reason)]
    decision = decide(both)
    assert decision.decision == "PAUSE_AND_CLARIFY" and reason in decision.reasoning


FENCED = (
    'Here is my review.\n\n```json\n{"verdict": "concern", "summary": "s", "findings": '
    '[{"severity": "medium", "file": "a.py", "line": "3", "text": "t"}]}\n```\nThanks.'
)


@pytest.mark.parametrize(
    "text,verdict,parsed",
    [
        (FENCED, "concern", True),
        ('{"verdict":"approve"}', "approve", True),  # missing summary and findings
        ('I looked. {"verdict": "BLOCKER", "summary": "x"} That is all.', "blocker", True),  # prose
        ('```\n{"verdict": "approved", "summary": "fine"}\n```', "approve", True),  # synonym, bare fence
        ('Example: {"verdict": "approve|concern|blocker"}\nMine: {"verdict": "concern"}', "concern", True),
        ("verdict: approve\nall good", "concern", False),  # an approval must be JSON
        ("verdict: blocker - the schema is wrong", "blocker", False),  # prose may only be stricter
        ('{"summary": "no verdict field"}', "concern", False),
        ('{"verdict": "maybe"}', "concern", False),
        ("I think it is fine.", "concern", False),  # no verdict at all: never an approval
        ("", "concern", False),
        ('```json\n{"verdict": "approve", \n```', "concern", False),  # cut JSON
    ],
)
def test_verdict_parsing_is_robust(text, verdict, parsed):
    answer = parse_verdict("codex", text)
    assert answer.verdict == verdict
    assert answer.parsed is parsed
    if not parsed:
        assert answer.reason


def test_findings_are_normalised():
    answer = parse_verdict("gemini", FENCED)
    assert answer.summary == "s"
    finding = answer.findings[0]
    assert (finding.severity, finding.file, finding.line, finding.text) == ("medium", "a.py", 3, "t")
    weird = parse_verdict(
        "gemini", '{"verdict": "concern", "findings": ["plain text", 7, {"message": "m", "line": true}]}'
    )
    assert [f.text for f in weird.findings] == ["plain text", "m"]
    assert weird.findings[1].line is None


def test_prompt_carries_the_headers_the_agents_key_on_and_no_nul():
    prompt = review_prompt(
        "s1",
        "rev-001-design",
        "the task",
        {
            "triggers": [{"kind": "milestone", "agent": "gemini", "text": "done"}],
            "assignment": {
                "id": "design",
                "role": "architect",
                "agent": "gemini",
                "title": "T",
                "instructions": "I",
                "final_text": "F",
            },
            "recent_events": [{"type": "milestone", "text": "done"}],
            "change": {"how": "git diff", "text": "diff\0with nul"},
        },
    )
    for line in ("Session: s1", "Assignment: rev-001-design", "Role: reviewer", "Kind: peer_review", "Task: the task"):
        assert line in prompt
    assert "\0" not in prompt and '"verdict"' in prompt
