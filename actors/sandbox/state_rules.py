"""What of a CLI's private state may pass: the rules, apart from the files they are applied to.

``token_data`` cuts a credential file down to the token fields its adapter names, with their
types; ``changed`` and ``merged`` give the user only what a session's runs refreshed;
``pinned`` resets the keys of a file that name MCP servers to the user's. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import Any

from meta_orchestrator.actors.adapters.base import TokenShape


def token_data(obj: object, shape: TokenShape) -> tuple[dict[str, Any], list[str]]:
    """The fields of ``obj`` that ``shape`` names with the types it allows; and what was dropped.

    Only names are reported as dropped, never values (they may be secrets).
    """
    if not isinstance(obj, dict):
        return {}, [f"(a {type(obj).__name__}, not an object)"]
    kept: dict[str, Any] = {}
    dropped = [str(key) for key in obj if key not in shape]
    for key, allowed in shape.items():
        if key not in obj:
            continue
        value = obj[key]
        if isinstance(allowed, Mapping):
            inner, lost = token_data(value, allowed)
            dropped += [f"{key}.{name}" for name in lost]
            if inner:
                kept[key] = inner
        elif _typed(value, allowed):
            kept[key] = value
        else:
            dropped.append(key)
    return kept, dropped


def _typed(value: object, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in allowed:  # JSON true is no number of seconds
        return False
    if isinstance(value, list):
        return list in allowed and all(isinstance(item, str) for item in value)
    return isinstance(value, allowed)


def merged(user: dict[str, Any], tokens: Mapping[str, Any]) -> dict[str, Any]:
    """``user`` with the token fields replaced by ``tokens`` (nested objects merged)."""
    out = dict(user)
    for key, value in tokens.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def changed(tokens: Mapping[str, Any], seen: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``tokens`` whose values differ from ``seen`` (nested objects compared inside)."""
    out: dict[str, Any] = {}
    for key, value in tokens.items():
        before = seen.get(key) if isinstance(seen, Mapping) else None
        if isinstance(value, dict) and isinstance(before, dict):
            if inner := changed(value, before):
                out[key] = inner
        elif value != before:
            out[key] = value
    return out


def pinned(mine: dict[str, Any], user: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """``mine`` with each of ``paths`` (dotted keys, ``*`` for every entry) as in ``user``."""
    out = deepcopy(mine)
    for path in paths:
        _pin(out, user, path.split("."))
    return out


def _pin(target: dict[str, Any], source: object, keys: list[str]) -> None:
    key, rest = keys[0], keys[1:]
    given = source if isinstance(source, dict) else {}
    if key == "*":
        for name, value in target.items():
            if isinstance(value, dict) and rest:
                _pin(value, given.get(name), rest)
    elif not rest:
        if key in given:
            target[key] = deepcopy(given[key])
        else:
            target.pop(key, None)
    elif isinstance(target.get(key), dict):
        _pin(target[key], given.get(key), rest)


__all__ = ["changed", "merged", "pinned", "token_data"]
