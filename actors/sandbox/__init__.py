"""The agents' sandbox: the policy (data), claude's PreToolUse hook command, the settings file.

Everything in this package imports only the standard library: the hook runs as its own
short-lived process for every tool call claude makes, so it must start fast and must not
fail to import (a hook that crashes lets the call through; see ``hook.py``).
"""
