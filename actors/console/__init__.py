"""The terminal: the console view actor, answers typed there, and `orchestrate follow`."""
