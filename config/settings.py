"""Every setting the orchestrator reads, typed, defaulted and described.

The launcher loads a TOML file (``--config``) once and hands each section to the actor
that needs it. Unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# [limits] has a module of its own, as [notify]; its classes are imported from here too.
from meta_orchestrator.config.limits_settings import AgentLimits as AgentLimits
from meta_orchestrator.config.limits_settings import LimitsSettings
from meta_orchestrator.config.notify_settings import NotifySettings
from meta_orchestrator.messages.base import AgentName


class ConfigError(Exception):
    """The configuration file cannot be used; the message says where and why."""


class Section(BaseModel):
    """A frozen settings section that rejects unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


_ENV_PATTERN = re.compile(r"[A-Za-z0-9_*?]+")


class AgentSettings(Section):
    """How one agent CLI is run."""

    command: str | None = Field(
        default=None, description="executable (and leading args), shell-split; default: the CLI's own name on PATH"
    )
    model: str | None = Field(default=None, description="model name passed with the CLI's model flag")
    enabled: bool = Field(default=True, description="false: its roles go to the other agents")
    extra_args: tuple[str, ...] = Field(default=(), description="flags added to every run")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    pass_env: tuple[str, ...] = Field(
        default=(),
        description="more variables of the orchestrator's environment the CLI receives: names or globs "
        "(MY_TOOL_*); it always receives PATH, HOME, locale, terminal, proxies, CA bundles and its "
        "vendor's own, and nothing else",
    )
    max_parallel: int = Field(
        default=1,
        ge=1,
        le=16,
        description="assignments of this agent that may run at once, each a CLI process in its own checkout "
        "(independent ones only; [session] max_concurrent still caps the session's total)",
    )
    share_min: float = Field(ge=0, le=1, description="least share of the work (by weight)")
    share_max: float = Field(ge=0, le=1, description="largest share of the work (by weight)")
    allow_bypass: bool = Field(
        default=False,
        description="allow the CLI's bypass-all-permissions flag; the OS sandbox and claude's hook still apply",
    )
    protocol: Literal["stream", "acp", "app-server"] | None = Field(
        default=None,
        description="how the CLI is driven: stream (its headless JSON output), acp (Agent Client Protocol: "
        "asked before every tool call), app-server (codex's JSON-RPC server); default: the CLI's own first choice",
    )
    state_dirs: tuple[str, ...] = Field(
        default=(),
        description='a CLI added by configuration (protocol = "acp"): the folders in $HOME where it keeps its '
        "state; each run gets the session's private copy of each",
    )
    state_copy: tuple[str, ...] = Field(
        default=(), description="what of each state folder (its settings, its login) the private copy starts with"
    )
    install_hint: str | None = Field(default=None, description="how to install a CLI added by configuration")

    @field_validator("state_dirs", "state_copy")
    @classmethod
    def _relative(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            if not path or path.startswith(("/", "~")) or ".." in path.split("/"):
                raise ValueError(f"{path!r} must be a path relative to $HOME (or to the state folder), without ..")
        return paths

    @field_validator("pass_env")
    @classmethod
    def _env_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not _ENV_PATTERN.fullmatch(name):
                raise ValueError(
                    f"pass_env entry {name!r} is not a variable name or a glob of one (letters, digits, _, * and ?)"
                )
        return names

    @model_validator(mode="after")
    def _share_range(self) -> AgentSettings:
        if self.share_min > self.share_max:
            raise ValueError(f"share_min {self.share_min} is above share_max {self.share_max}")
        return self


def _default_agents() -> dict[str, AgentSettings]:
    return {
        "gemini": AgentSettings(share_min=0.40, share_max=0.50),
        "codex": AgentSettings(share_min=0.10, share_max=0.20),
        "claude": AgentSettings(share_min=0.40, share_max=0.50),
        # Not in the default team: [agents.<name>] enabled = true brings one in (a user without
        # it installed is not refused at preflight).
        "copilot": AgentSettings(share_min=0.0, share_max=0.50, enabled=False),
        "qwen": AgentSettings(share_min=0.0, share_max=0.50, enabled=False),
        "opencode": AgentSettings(share_min=0.0, share_max=0.50, enabled=False),
    }


_ROLE_FALLBACK: dict[str, tuple[AgentName, ...]] = {
    "architect": ("qwen", "claude", "codex", "opencode"),  # qwen: a Gemini CLI fork, gemini's natural stand-in
    "implementer": ("codex", "gemini", "copilot", "opencode"),
    "reviewer": ("claude", "gemini", "copilot", "opencode"),
}


class SessionSettings(Section):
    """How a session plans and schedules its work."""

    max_concurrent: int = Field(
        default=3, ge=1, le=64, description="assignments running at once, of all agents (planning and reviews aside)"
    )
    plan_retries: int = Field(
        default=1,
        ge=0,
        le=3,
        description="re-asks of the architect after an invalid plan, before the default breakdown is used",
    )
    assignment_timeout_s: float = Field(default=1800, gt=0, description="wall-clock cap per CLI run")
    stop_grace_s: float = Field(default=5.0, gt=0, le=60, description="SIGTERM to SIGKILL grace")
    max_line_bytes: int = Field(
        default=1_048_576, ge=1024, description="longest stdout line parsed; longer lines are kept whole in a side file"
    )
    exit_grace_after_result_s: float = Field(
        default=10.0,
        gt=0,
        description="a CLI that printed "
        "its final result and is still running this much "
        "later is ended; the run counts as finished",
    )
    max_restarts: int = Field(
        default=3,
        ge=0,
        le=100,
        description="restarts of one crashed actor allowed within restart_window_s; one more fails the session",
    )
    restart_window_s: float = Field(default=60.0, gt=0, description="window of the restart budget")
    conflict_rounds: int = Field(
        default=2,
        ge=0,
        le=10,
        description="times an assignment's agent is asked to resolve a merge conflict before the user is asked",
    )
    roles: dict[str, AgentName] = Field(
        default_factory=lambda: {"architect": "gemini", "implementer": "claude", "reviewer": "codex"},
        description="which agent plays which role",
    )
    role_fallback: dict[str, tuple[AgentName, ...]] = Field(
        default_factory=lambda: dict(_ROLE_FALLBACK),
        description="who takes a role over, in order, when its agent cannot serve in this session "
        "(not installed, credentials or licence refused, quota spent, crashed past its restarts, "
        "server errors, malformed output or hangs past recovery.max_retries); any registered CLI",
    )

    @model_validator(mode="after")
    def _known_roles(self) -> SessionSettings:
        known = {"architect", "implementer", "reviewer"}
        unknown = (set(self.roles) | set(self.role_fallback)) - known
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        return self


class WebSettings(Section):
    """The web servers: a session's dashboard, and ``orchestrate serve`` (its own --host/--port;
    the connection limits below apply to both)."""

    host: str = Field(default="127.0.0.1", description="interface to bind; anything but loopback needs allow_remote")
    allow_remote: bool = Field(
        default=False, description="allow a host other machines can reach (--allow-remote); the token travels in clear"
    )
    port: int = Field(default=8000, ge=0, le=65535, description="0 picks a free port")
    client_queue: int = Field(default=1000, ge=10, description="frames buffered per browser")
    max_connections: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="requests served at once, open live streams (WebSocket, SSE) included; "
        "past it a request is answered 503 at once",
    )
    max_waiting: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="connections still sending their request, held without a thread; past it the oldest is closed",
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="a request's line, headers and body must arrive within this of its connection "
        "opening; else 408 and closed (live streams are not cut by it)",
    )
    send_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a peer that takes none of what is sent to it for this long is cut off",
    )
    ping_interval_s: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="a WebSocket is pinged this often and closed when a ping went unanswered; "
        "an SSE stream gets a comment line",
    )


ReviewDecisionName = Literal["CONTINUE", "LOG_WARNING", "PAUSE_AND_CLARIFY", "STOP_AND_ESCALATE"]


class ReviewSettings(Section):
    """Peer reviews: when they start, who answers, how long they may take."""

    enabled: bool = Field(default=True, description="false: no peer reviews at all")
    on_milestone: bool = Field(
        default=True, description="review after an agent's milestone marker (not after every file written)"
    )
    on_blocker: bool = Field(default=True, description="review when an agent reports a blocker")
    on_request: bool = Field(default=True, description="review when an agent asks for one (a review marker)")
    phase_end_roles: tuple[str, ...] = Field(
        default=("architect", "implementer"),
        description="roles whose finished assignments are reviewed before their dependents "
        "start (the coordinator waits in status 'reviewing')",
    )
    debounce_s: float = Field(
        default=2.0, ge=0, le=600, description="triggers for the same assignment within this window make one review"
    )
    max_rounds: int = Field(
        default=2,
        ge=0,
        le=20,
        description="reviews per assignment; later triggers are recorded as skipped, so reviews cannot loop",
    )
    reviewer_timeout_s: float = Field(
        default=600, gt=0, description="wall-clock limit of one peer's review run; a timeout counts as a concern"
    )
    recent_events: int = Field(default=30, ge=0, le=500, description="author events quoted in the request")
    diff_chars: int = Field(
        default=30_000, ge=1000, description="size cap of the change quoted in the request (cut with a note)"
    )
    when_no_reviewers: ReviewDecisionName = Field(
        default="LOG_WARNING",
        description="decision when no peer can answer (recorded as unreviewed, never as an approval)",
    )
    question_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="escalation and "
        "clarification questions expire after this "
        "(escalation: stop, clarification: continue); "
        "None waits for the user",
    )


QuestionKindName = Literal["escalation", "clarification", "confirmation"]
UnattendedMode = Literal["stop", "defaults"]


class QuestionsSettings(Section):
    """What happens to a question nobody can answer (no terminal on stdin, no dashboard)."""

    unattended: UnattendedMode = Field(
        default="stop",
        description="stop: save everything, end every agent, status 'waiting', exit 3 (continue with "
        "`orchestrate answer` and `orchestrate resume`); defaults: each question takes its default "
        "(clarification: continue with an 'unanswered' note; escalation: stop; confirmation: deny)",
    )
    timeout_s: dict[QuestionKindName, float] = Field(
        default_factory=dict,
        description="per kind: an open question takes its default after this many seconds, even "
        "with someone there (unset: review.question_timeout_s for clarification and escalation, "
        "sandbox.confirm_timeout_s / recovery.confirm_timeout_s for confirmations)",
    )
    bell: bool = Field(default=True, description="ring the terminal bell when a new question is printed")

    @model_validator(mode="after")
    def _positive_timeouts(self) -> QuestionsSettings:
        bad = [k for k, v in self.timeout_s.items() if v <= 0]
        if bad:
            raise ValueError(f"timeout_s must be above 0 for: {', '.join(bad)}")
        return self


class RecoveryPattern(Section):
    """A user's addition to the error pattern table (``[[recovery.patterns]]``)."""

    cli: AgentName | Literal["*"] = Field(default="*", description="which CLI (an agent name), * for every one")
    cause: str = Field(description="an error class, e.g. auth, rate_limit, network, crash")
    match: str | None = Field(
        default=None,
        description="regex searched (case-insensitive) in error events, the stderr tail and the failure text",
    )
    exit_codes: tuple[int, ...] = Field(default=(), description="exit codes that mean this class")


class RecoverySettings(Section):
    """The recovery engine: bounded relaunches with corrected flags, back-off, escalation."""

    enabled: bool = Field(default=True, description="false: a failed run just fails")
    max_attempts_per_agent: int = Field(
        default=6, ge=0, le=50, description="recoveries per agent in one session, all classes together"
    )
    max_retries: dict[str, int] = Field(
        default_factory=lambda: {
            "rate_limit": 3,
            "server": 2,
            "network": 2,
            "crash": 1,
            "hang": 1,
            "malformed": 1,
            "outside_path": 2,
            "repo_trust": 1,
            "session_not_found": 1,
            "node_lost": 2,
        },
        description="retries per agent and class; a class not listed is never retried. Once spent, a "
        "persistent failure (rate_limit, server, network, hang, malformed, crash) moves the agent's "
        "roles to the next of [session] role_fallback",
    )
    backoff_base_s: float = Field(default=5.0, ge=0, description="first back-off delay")
    backoff_max_s: float = Field(default=300.0, ge=0, description="largest back-off delay")
    backoff_jitter: float = Field(
        default=0.3, ge=0, le=1, description="random extra fraction of each delay, so agents do not retry in step"
    )
    grant_outside_dirs: bool = Field(
        default=True,
        description="relaunch with a directory an "
        "agent was refused outside the target (never /, system "
        "folders, $HOME or a parent of the target)",
    )
    confirm_granted_dirs: bool = Field(
        default=True,
        description="ask the user before such a relaunch; unanswered within confirm_timeout_s: not granted",
    )
    confirm_timeout_s: float = Field(default=300.0, gt=0, description="how long the question about a directory waits")
    create_granted_dirs: bool = Field(
        default=True, description="create a refused directory that does not exist yet before granting it"
    )
    patterns: tuple[RecoveryPattern, ...] = Field(
        default=(), description="extra error patterns, tried before the built-in table"
    )


SuspiciousAction = Literal["warn", "pause", "stop"]


class SandboxSettings(Section):
    """What the agents may do: the OS sandbox, claude's PreToolUse hook and the tool-call watch."""

    os: Literal["bwrap", "off"] = Field(
        default="bwrap",
        description="bwrap: every agent CLI runs inside bubblewrap (writes only in its working, scratch and "
        "state folders); off: no OS sandbox (a warning every run)",
    )
    enabled: bool = Field(
        default=True,
        description="generate claude's --settings hook and run "
        "the approval channel and the watch; off: only the OS sandbox and the CLIs' own permission modes apply",
    )
    confirm_timeout_s: float = Field(
        default=120, gt=0, le=3600, description="how long a high-risk tool call waits for the user; unanswered: denied"
    )
    confirm_writes_outside_target: bool = Field(
        default=True,
        description="a write outside the target, scratch "
        "dir and /tmp (shell redirects, cp/mv/tee..., Write/Edit) asks the user",
    )
    blocked_patterns: tuple[str, ...] = Field(
        default=(), description="extra regexes: a matching shell command is refused before it runs"
    )
    high_risk_patterns: tuple[str, ...] = Field(
        default=(), description="extra regexes: a matching shell command waits for the user's yes"
    )
    suspicious_patterns: tuple[str, ...] = Field(
        default=(), description="extra regexes searched in every agent's tool calls; a match is a finding"
    )
    suspicious_action: SuspiciousAction = Field(
        default="pause", description="what a finding does to the agent: warn, pause or stop"
    )
    isolate_host_services: bool = Field(
        default=True,
        description="Landlock inside the OS sandbox: no abstract Unix socket of the host (D-Bus, X11) and TCP "
        "connections only to the ports the CLI needs (443, 80, 53, its endpoint's and proxy's, allow_connect); "
        "named sockets (/run, $XDG_RUNTIME_DIR) are hidden either way",
    )
    allow_connect: tuple[str, ...] = Field(
        default=(),
        description='more TCP ports a CLI may connect to, as "host:port", "port" or "low-high" (Landlock '
        'rules are per port: the host part is not enforced), e.g. ["127.0.0.1:8080", "32768-60999"]',
    )
    private_tmp_mb: float | None = Field(
        default=None,
        gt=0,
        description="size of the private /tmp and of /dev/shm inside the OS sandbox (each); None: "
        "private_tmp_fraction of the agent's max_rss_mb (512 MB when that is off)",
    )
    private_tmp_fraction: float = Field(
        default=0.5, gt=0, le=1, description="the private /tmp's and /dev/shm's size as a share of max_rss_mb"
    )

    @model_validator(mode="after")
    def _ports_named(self) -> SandboxSettings:
        self.allowed_ports()  # raises on an entry without a port
        return self

    def allowed_ports(self) -> tuple[int, ...]:
        """``allow_connect`` as TCP ports (a range "lo-hi" gives each port in it)."""
        ports: list[int] = []
        for entry in self.allow_connect:
            text = entry.rsplit(":", 1)[-1].strip("[] ") if not entry.strip().isdigit() else entry.strip()
            low, _, high = text.partition("-")
            bounds = [int(b) for b in (low, high or low) if b.isdigit() and 0 < int(b) < 65536]
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(
                    f'allow_connect entry {entry!r} names no TCP port (write "host:port", "port" or "low-high")'
                )
            ports.extend(range(bounds[0], bounds[1] + 1))
        return tuple(ports)

    def private_tmp_bytes(self, max_rss_mb: float | None) -> int:
        """Each private tmpfs's size for an agent with this memory limit."""
        if self.private_tmp_mb is not None:
            return int(self.private_tmp_mb * 1024 * 1024)
        megabytes = max_rss_mb * self.private_tmp_fraction if max_rss_mb is not None else 512
        return int(megabytes * 1024 * 1024)


class ClusterSettings(Section):
    """Agent CLIs on other machines: a Ray cluster whose nodes offer agent slots."""

    address: str | None = Field(
        default=None,
        description="the Ray cluster to run agent CLIs on, in Ray's own forms (host:port, auto, "
        "ray://host:port); None: every CLI runs on this machine. Needs pip install 'meta-orchestrator[cluster]'",
    )
    token_file: Path | None = Field(
        default=None,
        description="the cluster's token (Ray's token authentication, RAY_AUTH_MODE=token): a file only you "
        "can read (chmod 600); None: RAY_AUTH_TOKEN in this environment, else Ray's own ~/.ray/auth_token (0600)",
    )
    agents: tuple[AgentName, ...] | None = Field(
        default=None, description="the agents whose CLIs run on the cluster; None: all of them"
    )
    slot_resource: str = Field(
        default="agent_slot",
        min_length=1,
        description="the custom resource a node offers per concurrent run (ray start --resources)",
    )
    resources: dict[AgentName, dict[str, float]] = Field(
        default_factory=dict,
        description="extra custom resources an agent's runs ask for, to keep them on some nodes "
        "(e.g. claude = { big_memory = 1 })",
    )
    wait_notice_s: float = Field(
        default=1.0, ge=0, description="a run not placed after this long says why it waits (no free slot)"
    )

    def runs_remote(self, agent: str) -> bool:
        """True when ``agent``'s CLIs run on the cluster."""
        return self.address is not None and (self.agents is None or agent in self.agents)


class Settings(Section):
    """All settings."""

    workspace: Path = Field(default=Path("workspace"), description="where session folders go")
    agents: dict[AgentName, AgentSettings] = Field(default_factory=_default_agents)
    session: SessionSettings = Field(default_factory=SessionSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    questions: QuestionsSettings = Field(default_factory=QuestionsSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    extra: dict[str, Any] = Field(default_factory=dict, description="sections added by later features")

    @model_validator(mode="before")
    @classmethod
    def _merge_agent_defaults(cls, data: Any) -> Any:
        # A user who sets only [agents.claude] command keeps the default shares of all three.
        if isinstance(data, dict) and isinstance(data.get("agents"), dict):
            merged = {}
            defaults = _default_agents()
            for name in defaults:
                base = defaults[name].model_dump()
                given = data["agents"].get(name, {})
                if isinstance(given, AgentSettings):
                    given = given.model_dump()
                merged[name] = {**base, **given} if isinstance(given, dict) else given
            unknown = set(data["agents"]) - set(defaults)
            for name in unknown:
                merged[name] = data["agents"][name]  # let validation name it
            data = {**data, "agents": merged}
        return data


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def load_settings(path: Path | None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the TOML file (if any), apply command-line overrides, validate.

    Raises:
        ConfigError: the file is missing, not TOML, or has a bad key or value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return with_overrides(data, overrides or {}, f"config file {path}" if path else "settings")


def with_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> Settings:
    """Settings from ``data`` (a TOML file's or ``launch.json``'s) with ``overrides`` by dotted
    name (``"web.port"``) over it, validated; ``data`` is left as it was. ``source`` names the
    data in the error.

    Raises:
        ConfigError: a bad key or value.
    """
    merged = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        node = merged
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"{source} has {exc.error_count()} problem(s):\n{_describe(exc)}") from None
