"""Base of every message, and the small shared types."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

# An agent is named by its adapter (actors.adapters.registry knows which exist); the name is
# also a file name (<agent>.jsonl) and a config table key, hence the narrow alphabet.
AgentName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]

# One of an agent's runs at once (``[agents.<name>] max_parallel``): slot 1 is the agent's first
# worker, named like the agent (``claude``, ``claude.jsonl``); slot 2 on are ``claude#2``,
# ``claude#2.jsonl``. '#' is outside the agent alphabet, so a worker's name is never an agent's.
RunSlot = Annotated[int, Field(ge=1, le=16)]
WorkerName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}(#([2-9]|1[0-6]))?$")]


def worker_name(agent: str, slot: int = 1) -> str:
    """The name of ``agent``'s worker for ``slot``: its key, its event file's stem, its label."""
    return agent if slot == 1 else f"{agent}#{slot}"


def split_worker_name(name: str) -> tuple[str, int]:
    """(agent, slot) of a worker's name (``claude#2`` -> ``("claude", 2)``)."""
    agent, _, slot = name.partition("#")
    return agent, int(slot) if slot.isdigit() else 1


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """``moment`` as state.json writes it: ISO 8601 in UTC, to the millisecond, with a "Z"."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# A moment in a record: an aware datetime in memory, ISO 8601 in UTC to the millisecond with
# a "Z" in JSON (state.json, the dashboard); the older string form reads back unchanged.
Timestamp = Annotated[datetime, PlainSerializer(iso_utc, return_type=str, when_used="json")]


class Frozen(BaseModel):
    """An immutable value; unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


M = TypeVar("M", bound=BaseModel)
# BaseModel's slots, set through their descriptors: a third cheaper than object.__setattr__,
# which looks each name up on the type first.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def trusted_maker(cls: type[M]) -> Callable[[dict[str, Any]], M]:
    """A function making instances of ``cls`` from values the caller made and knows valid,
    without validation.

    For frozen models on the event path's hot loop only (one per line an agent prints): what
    ``model_construct`` does, minus its per-field Python loop, about 3x cheaper than
    validating and 10x cheaper than ``model_construct``. The fields dict must name every
    field, in their order (defaults are not filled in), and becomes the instance's own dict.
    Everything but the dict is bound once here: a quarter of the cost of each call.
    """
    # One fields set per class, shared by its trusted instances: pydantic never changes a
    # frozen model's fields set (model_copy copies it first).
    all_fields = set(cls.model_fields)
    new, set_dict, set_fields_set, set_extra, set_private = (
        object.__new__,
        _set_dict,
        _set_fields_set,
        _set_extra,
        _set_private,
    )

    def make(fields: dict[str, Any]) -> M:
        instance = new(cls)
        set_dict(instance, fields)
        set_fields_set(instance, all_fields)
        set_extra(instance, None)
        set_private(instance, None)
        return instance

    return make


@functools.cache
def _maker(cls: type[BaseModel]) -> Callable[[dict[str, Any]], Any]:
    return trusted_maker(cls)


def trusted(cls: type[M], fields: dict[str, Any]) -> M:
    """An instance of ``cls`` from ``fields``, as ``trusted_maker(cls)`` makes one (where a
    loop makes many, bind the maker once instead)."""
    result: M = _maker(cls)(fields)
    return result


class Message(Frozen):
    """Something one actor tells another.

    Pykka does not copy messages, so every field is immutable (tuples, frozen models).
    """

    message_id: UUID = Field(default_factory=uuid4)
    sent_at: datetime = Field(default_factory=utc_now)
