"""What a node's run host sends the driver: bytes the driver parses and validates itself.

``ray.get`` rebuilds a result the way its metadata says, and the worker that produced it
writes that metadata: a node taken over could hand the driver a pickle, and unpickling runs
code. So every reply of a run host is ``bytes`` (Ray stores those as ``RAW``, read back as
they are; ``cluster_host.plain_get`` takes nothing else) laid out here: the length of a JSON
header, the header (a value or the node's error), then the binary parts the header sizes
(lines, a bundle, a piece of an over-long line). The header is validated by pydantic on the
driver; a reply that does not parse is the node's fault, never code run here.

Both sides import this module; it does not import Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError

from meta_orchestrator.actors.processes.line_buffer import Chunk
from meta_orchestrator.actors.processes.process_tree import TreeFigures
from meta_orchestrator.actors.cluster.remote_checkout import WorkBack
from meta_orchestrator.messages.base import Frozen

HEADER_LIMIT = 4 * 1_048_576  # a batch's header sizes its chunks; its bytes travel after it
_LENGTH_BYTES = 4

T = TypeVar("T")


@dataclass(frozen=True)
class RunStarted:
    """The CLI runs: where (Ray's node id, its address, the machine's name) and as what."""

    pid: int
    pgid: int
    sandboxed: bool
    node_id: str
    node_ip: str
    hostname: str
    host_pid: int  # the actor's own process
    workdir: str | None = None  # the node's checkout, when the work travelled by git


@dataclass(frozen=True)
class NodeSample:
    """The run's process tree as its node sees it, at ``taken_at`` (the node's time.time())."""

    taken_at: float
    figures: TreeFigures
    written_s: float | None = None  # since the newest write in the run's folder (None: not known)


@dataclass(frozen=True)
class HostEnd:
    """The CLI's group is gone and every line of it is in the batches."""

    returncode: int  # negative: the signal that ended it
    stragglers: int  # processes it left in its group, ended by the host
    work: WorkBack | None = None  # the run's changes, when it worked in a checkout of its own


@dataclass(frozen=True)
class LineBatch:
    """One long-poll's answer: the lines after ``after_seq`` up to ``last_seq``, the end
    once every line has been handed over, and the latest sample when there is a new one."""

    chunks: list[Chunk]
    last_seq: int
    end: HostEnd | None
    sample: NodeSample | None
    buffered_peak: int  # the most the node's buffer held so far (it never exceeds its bound)


class NodeReplyError(Exception):
    """A node's reply is not what its call returns: not framed, not valid, or not plain."""


class NodeFailure(Exception):
    """The node's host raised this (as data: type name, message, and an OSError's fields)."""

    def __init__(
        self,
        kind: str,
        message: str,
        errno: int | None = None,
        strerror: str | None = None,
        filename: str | None = None,
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message
        self.errno, self.strerror, self.filename = errno, strerror, filename

    def as_os_error(self) -> OSError | None:
        """The node's OSError as one of this side (the spawn's missing executable, say)."""
        if self.errno is None:
            return None
        return OSError(self.errno, self.strerror or self.message, self.filename)  # picks FileNotFoundError...


class _Failure(Frozen):
    kind: str = Field(max_length=200)
    message: str = Field(max_length=20_000)
    errno: int | None = None
    strerror: str | None = Field(default=None, max_length=2_000)
    filename: str | None = Field(default=None, max_length=8_192)


class _WireChunk(Frozen):
    stream: Literal["stdout", "stderr"]
    first: int = Field(ge=1)
    count: int = Field(ge=0)
    size: int = Field(ge=0)
    extras: tuple[tuple[int, int, str], ...] = ()


class _WireWork(Frozen):
    bundle_size: int | None = Field(default=None, ge=0)
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40,64}$")
    error: str | None = None


class _WireEnd(Frozen):
    returncode: int
    stragglers: int = Field(ge=0)
    work: _WireWork | None = None


class _WireBatch(Frozen):
    chunks: tuple[_WireChunk, ...]
    last_seq: int = Field(ge=0)
    end: _WireEnd | None
    sample: NodeSample | None
    buffered_peak: int = Field(ge=0)


_STARTED = TypeAdapter(RunStarted)
_FLAG = TypeAdapter(bool)
_NOTHING = TypeAdapter(type(None))
_BATCH = TypeAdapter(_WireBatch)
_COMMITS = TypeAdapter(tuple[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40,64}$")], ...])


# -- the node's side ----------------------------------------------------------------------------


def frame(value: bool | None, payload: bytes = b"") -> bytes:
    """A reply carrying a flag or nothing, and bytes after it (a piece of a line)."""
    return _framed({"value": value}, [payload])


def commits(values: tuple[str, ...]) -> bytes:
    """A reply carrying commit names (the starts a node keeps)."""
    return _framed({"value": list(values)})


def failure(exc: BaseException) -> bytes:
    """A reply carrying the node's error as data."""
    fields: dict[str, Any] = {"kind": type(exc).__name__, "message": str(exc)[:20_000]}
    if isinstance(exc, OSError) and isinstance(exc.errno, int):
        fields.update(errno=exc.errno, strerror=exc.strerror, filename=_text(exc.filename))
    return _framed({"error": fields})


def started(value: RunStarted) -> bytes:
    return _framed({"value": _STARTED.dump_python(value, mode="json")})


def batch(value: LineBatch) -> bytes:
    """A long-poll's answer: its lines and a bundle after the header, each sized there."""
    chunks = [
        _WireChunk(stream=stream, first=first, count=count, size=len(packed), extras=extras)
        for stream, first, count, packed, extras in value.chunks
    ]
    parts = [packed for _, _, _, packed, _ in value.chunks]
    end = None
    if value.end is not None:
        work = value.end.work
        wire_work = None
        if work is not None:
            wire_work = _WireWork(
                bundle_size=len(work.bundle) if work.bundle is not None else None, commit=work.commit, error=work.error
            )
            if work.bundle is not None:
                parts.append(work.bundle)
        end = _WireEnd(returncode=value.end.returncode, stragglers=value.end.stragglers, work=wire_work)
    header = _WireBatch(
        chunks=tuple(chunks), last_seq=value.last_seq, end=end, sample=value.sample, buffered_peak=value.buffered_peak
    )
    return _framed({"value": header.model_dump(mode="json")}, parts)


# -- the driver's side --------------------------------------------------------------------------


def read_started(reply: bytes | memoryview) -> RunStarted:
    return _read(reply, _STARTED)[0]


def read_commits(reply: bytes | memoryview) -> tuple[str, ...]:
    return _read(reply, _COMMITS)[0]


def read_flag(reply: bytes | memoryview) -> bool:
    return _read(reply, _FLAG)[0]


def read_nothing(reply: bytes | memoryview) -> None:
    _read(reply, _NOTHING)


def read_piece(reply: bytes | memoryview) -> bytes:
    """A piece of an over-long line: nothing in the header, the bytes after it."""
    return bytes(_read(reply, _NOTHING)[1])


def read_batch(reply: bytes | memoryview) -> LineBatch:
    """A long-poll's answer, checked whole: every size adds up, every line index exists."""
    header, payload = _read(reply, _BATCH)
    offset = 0
    chunks: list[Chunk] = []
    for chunk in header.chunks:
        packed = bytes(payload[offset : offset + chunk.size])
        offset += chunk.size
        if len(packed) != chunk.size:
            raise NodeReplyError("a batch's lines are shorter than its header says")
        lines = packed.count(b"\n") + 1 if chunk.count else 0
        if lines != chunk.count or (not chunk.count and packed):
            raise NodeReplyError(f"a chunk says {chunk.count} lines and holds {lines}")
        if any(not 0 <= i < chunk.count for i, _, _ in chunk.extras):
            raise NodeReplyError("a chunk names a line it does not hold")
        chunks.append((chunk.stream, chunk.first, chunk.count, packed, chunk.extras))
    end = None
    if header.end is not None:
        rest = bytes(payload[offset:])
        end = HostEnd(header.end.returncode, header.end.stragglers, _work_back(header.end.work, rest))
        offset += len(payload) - offset
    if offset != len(payload):
        raise NodeReplyError("a batch carries bytes its header does not account for")
    return LineBatch(
        chunks=chunks, last_seq=header.last_seq, end=end, sample=header.sample, buffered_peak=header.buffered_peak
    )


def _work_back(wire: _WireWork | None, rest: bytes) -> WorkBack | None:
    if wire is None:
        if rest:
            raise NodeReplyError("a batch carries bytes its header does not account for")
        return None
    if (wire.bundle_size or 0) != len(rest):
        raise NodeReplyError("a run's bundle is not the size its header says")
    return WorkBack(bundle=rest if wire.bundle_size is not None else None, commit=wire.commit, error=wire.error)


def _framed(header: dict[str, Any], parts: list[bytes] | None = None) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([len(head).to_bytes(_LENGTH_BYTES, "big"), head, *(parts or ())])  # one copy of the lines


def _read(reply: object, adapter: TypeAdapter[T]) -> tuple[T, memoryview]:
    """The value and a view of the bytes after the header (sliced without copying); the
    node's error raised as NodeFailure."""
    if not isinstance(reply, bytes | memoryview) or len(reply) < _LENGTH_BYTES:
        raise NodeReplyError("a node's reply is not a framed reply")
    reply = memoryview(reply).cast("B")
    size = int.from_bytes(reply[:_LENGTH_BYTES], "big")
    if size > HEADER_LIMIT or _LENGTH_BYTES + size > len(reply):
        raise NodeReplyError(f"a node's reply header of {size} bytes does not fit")
    try:
        header = json.loads(bytes(reply[_LENGTH_BYTES : _LENGTH_BYTES + size]))
        if not isinstance(header, dict) or len(header) != 1:
            raise NodeReplyError("a node's reply header holds neither a value nor an error")
        if "error" in header:
            raise NodeFailure(**_Failure.model_validate(header["error"]).model_dump())
        if "value" not in header:
            raise NodeReplyError("a node's reply header holds neither a value nor an error")
        value = adapter.validate_python(header["value"])
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        raise NodeReplyError(f"a node's reply is not valid: {str(exc)[:500]}") from None
    return value, reply[_LENGTH_BYTES + size :]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


__all__ = [
    "HostEnd",
    "LineBatch",
    "NodeFailure",
    "NodeReplyError",
    "NodeSample",
    "RunStarted",
    "batch",
    "commits",
    "failure",
    "frame",
    "read_batch",
    "read_commits",
    "read_flag",
    "read_nothing",
    "read_piece",
    "read_started",
    "started",
]
