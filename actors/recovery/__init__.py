"""The recovery actor, the per-CLI error patterns, and the checks before launch."""
