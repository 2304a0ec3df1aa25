"""The cluster's token: where the driver reads it, and what keeps it from every agent CLI.

Ray's token authentication (``RAY_AUTH_MODE=token``) refuses every client, driver, node or
worker without the cluster's token. The driver takes it from ``[cluster] token_file`` (a
regular file only its owner may read or write), else from ``RAY_AUTH_TOKEN`` in its own
environment, else from Ray's own ``~/.ray/auth_token`` (0600 too). A CLI must never get it.
Ray reads its settings and the token from ``RAY_*`` variables (``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH``, ...): all are dropped from a CLI's environment. It reads the token
from files (``RAY_AUTH_TOKEN_PATH``'s, ``~/.ray/auth_token``): these are hidden in the
sandbox, with the node's Ray folder (addresses, sockets, logs); a hidden file has
``/dev/null`` bound over it, which the sandbox's nodev root refuses to open. No Ray import.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
RAY_ENV_PREFIX = "RAY_"
DEFAULT_TOKEN_DIR = ".ray"  # in the home folder: Ray's own token file, ~/.ray/auth_token
TOKEN_LIMIT = 4096


class ClusterTokenError(Exception):
    """The cluster's token is missing, or where it is kept is not safe; the message says how."""


def without_ray(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without a variable Ray reads (its token, its token's path, its addresses)."""
    return {name: value for name, value in env.items() if not name.upper().startswith(RAY_ENV_PREFIX)}


def secret_paths(environ: Mapping[str, str], home: Path) -> tuple[str, ...]:
    """What a sandbox on this machine must hide: Ray's token files (the one its environment
    names, the default one's folder)."""
    found = [str(home / DEFAULT_TOKEN_DIR)]
    if environ.get(TOKEN_PATH_ENV):
        found.append(environ[TOKEN_PATH_ENV])
    return tuple(found)


def read_token_file(path: Path) -> str:
    """The token in ``path``: a regular file of this user that nobody else may read or write.

    Raises:
        ClusterTokenError: missing, not a regular file, open to others, empty or too long.
    """
    shown = f"the cluster's token file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ClusterTokenError(f"{shown} does not exist (make one with: ray get-auth-token --generate)") from None
    except OSError as exc:
        raise ClusterTokenError(f"{shown} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ClusterTokenError(f"{shown} is not a regular file")
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            mode = stat.filemode(info.st_mode)
            raise ClusterTokenError(f"{shown} must be yours and readable by you alone (chmod 600 {path}); it is {mode}")
        data = f.read(TOKEN_LIMIT + 1)
    return _checked(data.decode(errors="replace"), shown)


def token_source(token_file: Path | None, environ: Mapping[str, str], home: Path) -> Path | None:
    """Where the driver's token is, checked: ``token_file`` when one is set, else
    ``RAY_AUTH_TOKEN`` (None: the environment holds it), else Ray's own ``~/.ray/auth_token``.

    Raises:
        ClusterTokenError: none of them holds a token, or the file is not safe.
    """
    if token_file is not None:
        read_token_file(token_file)
        return token_file
    if environ.get(TOKEN_ENV):
        _checked(environ[TOKEN_ENV], f"${TOKEN_ENV}")
        return None
    default = home / DEFAULT_TOKEN_DIR / "auth_token"
    if os.path.lexists(default):
        read_token_file(default)
        return default
    raise ClusterTokenError(
        f"the cluster needs its token: set [cluster] token_file (--cluster-token-file) to a file only you can "
        f"read (chmod 600), put the token in {TOKEN_ENV} in this process's environment, or keep it in {default}"
    )


def _checked(token: str, shown: str) -> str:
    token = token.strip()
    if not token:
        raise ClusterTokenError(f"{shown} is empty")
    if len(token) > TOKEN_LIMIT or any(c.isspace() or not c.isprintable() for c in token):
        raise ClusterTokenError(f"{shown} holds no token (one line of printable characters, no spaces)")
    return token


__all__ = [
    "AUTH_MODE_ENV",
    "ClusterTokenError",
    "TOKEN_ENV",
    "TOKEN_PATH_ENV",
    "read_token_file",
    "secret_paths",
    "token_source",
    "without_ray",
]
