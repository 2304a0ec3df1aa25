"""Every setting the orchestrator reads, typed, defaulted and described.

The launcher loads a TOML file (``--config``) once and hands each section to the actor
that needs it. Unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from messages.base import AGENT_NAMES, AgentName


class ConfigError(Exception):
    """The configuration file cannot be used; the message says where and why."""


class Section(BaseModel):
    """A frozen settings section that rejects unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AgentSettings(Section):
    """How one agent CLI is run."""

    command: str | None = Field(default=None, description="executable (and leading args), shell-split; "
                                "default: the CLI's own name on PATH")
    model: str | None = Field(default=None, description="model name passed with the CLI's model flag")
    enabled: bool = Field(default=True, description="false: its roles go to the other agents")
    extra_args: tuple[str, ...] = Field(default=(), description="flags added to every run")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    share_min: float = Field(ge=0, le=1, description="least share of the work (by weight)")
    share_max: float = Field(ge=0, le=1, description="largest share of the work (by weight)")
    allow_bypass: bool = Field(default=False, description="allow the CLI's bypass-all-permissions "
                               "flag; off unless you run inside an outer sandbox")

    @model_validator(mode="after")
    def _share_range(self) -> "AgentSettings":
        if self.share_min > self.share_max:
            raise ValueError(f"share_min {self.share_min} is above share_max {self.share_max}")
        return self


def _default_agents() -> dict[str, AgentSettings]:
    return {
        "gemini": AgentSettings(share_min=0.40, share_max=0.50),
        "codex": AgentSettings(share_min=0.10, share_max=0.20),
        "claude": AgentSettings(share_min=0.40, share_max=0.50),
    }


class SessionSettings(Section):
    """How a session plans and schedules its work."""

    max_concurrent: int = Field(default=3, ge=1, le=3, description="assignments running at once")
    plan_retries: int = Field(default=1, ge=0, le=3, description="re-asks of the architect after an "
                              "invalid plan, before the default breakdown is used")
    assignment_timeout_s: float = Field(default=1800, gt=0, description="wall-clock cap per CLI run")
    stop_grace_s: float = Field(default=5.0, gt=0, le=60, description="SIGTERM to SIGKILL grace")
    max_line_bytes: int = Field(default=1_048_576, ge=1024, description="longest stdout line parsed; "
                                "longer lines are kept whole in a side file")
    roles: dict[str, AgentName] = Field(
        default_factory=lambda: {"architect": "gemini", "implementer": "claude", "reviewer": "codex"},
        description="which agent plays which role")


class WebSettings(Section):
    """The dashboard's web server."""

    host: str = Field(default="127.0.0.1", description="interface to bind; anything but loopback warns")
    port: int = Field(default=8000, ge=0, le=65535, description="0 picks a free port")
    client_queue: int = Field(default=1000, ge=10, description="frames buffered per browser")


class Settings(Section):
    """All settings."""

    workspace: Path = Field(default=Path("workspace"), description="where session folders go")
    agents: dict[AgentName, AgentSettings] = Field(default_factory=_default_agents)
    session: SessionSettings = Field(default_factory=SessionSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    extra: dict[str, Any] = Field(default_factory=dict, description="sections added by later features")

    @model_validator(mode="before")
    @classmethod
    def _merge_agent_defaults(cls, data: Any) -> Any:
        # A user who sets only [agents.claude] command keeps the default shares of all three.
        if isinstance(data, dict) and isinstance(data.get("agents"), dict):
            merged = {}
            defaults = _default_agents()
            for name in AGENT_NAMES:
                base = defaults[name].model_dump()
                given = data["agents"].get(name, {})
                if isinstance(given, AgentSettings):
                    given = given.model_dump()
                merged[name] = {**base, **given} if isinstance(given, dict) else given
            unknown = set(data["agents"]) - set(AGENT_NAMES)
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


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
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
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        source = f"config file {path}" if path else "settings"
        raise ConfigError(f"{source} has {exc.error_count()} problem(s):\n{_describe(exc)}") from None
