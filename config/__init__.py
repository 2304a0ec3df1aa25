"""Settings: frozen pydantic sections, loaded once from TOML by the launcher."""

from meta_orchestrator.config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
