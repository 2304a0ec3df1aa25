"""Settings: frozen pydantic sections, loaded once from TOML by the launcher."""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
