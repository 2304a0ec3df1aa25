"""The table of which message moves an assignment to which phase (core/phases.py) is what the
rules do: read from their source, every phase a message's rule can reach through the calls it
makes is in the table, and every entry of the table is reached by its message's rule.

A rule's moves are the ``self.put(assignment, "<phase>", ...)`` calls in the methods it calls
(``self.<method>(...)``, followed through every mixin of ``SessionStep``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from meta_orchestrator.actors.session.core import phases
from meta_orchestrator.actors.session.core.core import RULES
from meta_orchestrator.actors.session.core.phases import ASSIGNMENT_MOVES, PHASES_OF_MESSAGE, IllegalTransition
from meta_orchestrator.messages.cluster import RunPlaced
from meta_orchestrator.messages.session import ControlRequested, StartSession

CORE = Path(phases.__file__).parent


def _literal_phases(node: ast.expr) -> Iterator[str]:
    """The phases a ``put``'s phase argument can be: string literals, possibly in ``a if c else b``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _literal_phases(node.body)
        yield from _literal_phases(node.orelse)
    else:
        raise AssertionError(f"{ast.unparse(node)}: a put's phase must be a literal, so the table can be checked")


def _methods() -> dict[str, ast.FunctionDef]:
    found: dict[str, ast.FunctionDef] = {}
    for path in sorted(CORE.glob("*.py")):
        for cls in ast.walk(ast.parse(path.read_text())):
            if isinstance(cls, ast.ClassDef):
                for item in cls.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                        assert item.name not in found, f"two methods named {item.name}"
                        found[item.name] = item
    return found


def _self_calls(method: ast.FunctionDef) -> Iterator[ast.Call]:
    for node in ast.walk(method):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self"
        ):
            yield node


def _reachable_phases(rule: str, methods: dict[str, ast.FunctionDef]) -> set[str]:
    seen, todo, moves = set(), [rule], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in methods:
            continue
        seen.add(name)
        for call in _self_calls(methods[name]):
            if call.func.attr == "put":
                phase = (
                    call.args[1]
                    if len(call.args) > 1
                    else next((k.value for k in call.keywords if k.arg == "phase"), None)
                )
                if phase is not None:
                    moves.update(_literal_phases(phase))
            todo.append(call.func.attr)
    return moves


def test_every_message_moves_exactly_the_phases_its_rule_can_reach():
    methods = _methods()
    derived = {kind: _reachable_phases(rule.__name__, methods) for kind, rule in RULES.items()}
    for kind in RULES:
        assert set(PHASES_OF_MESSAGE.get(kind, ())) == derived[kind], kind.__name__
    assert set(PHASES_OF_MESSAGE) <= set(RULES), "a row for a message no rule takes"


def test_every_move_of_the_phase_table_is_made_by_some_message():
    targets = {phase for moved in PHASES_OF_MESSAGE.values() for phase in moved}
    used = {new for moves in ASSIGNMENT_MOVES.values() for new in moves}
    assert used == targets


@pytest.mark.parametrize("cause", [None, StartSession, RunPlaced])
def test_a_legal_move_its_message_does_not_make_is_refused(cause):
    assert "paused" in ASSIGNMENT_MOVES["running"]
    with pytest.raises(IllegalTransition, match="a: running -> paused: "):
        phases.check_assignment_move(cause, "a", "running", "paused")
    phases.check_assignment_move(ControlRequested, "a", "running", "paused")  # a pause does
