"""TOML text of a settings table (what ``tomllib`` read, changed): every top-level key as
``key = value``, tables inline. Enough for a config file (strings, numbers, booleans,
lists, tables); the standard library reads TOML but does not write it."""

from __future__ import annotations

import json
import math
from typing import Any


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
        )
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string (same escapes)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ValueError(f"no TOML for {type(value).__name__}")


def toml_text(table: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(str(key))} = {toml_value(value)}\n" for key, value in table.items())
