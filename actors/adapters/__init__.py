"""One adapter per agent CLI: the exact command line, and its stream parsed into unified events."""
