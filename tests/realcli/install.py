"""Make the pinned agent CLIs available: ``npm ci`` in this directory when needed.

``ensure_real_clis()`` returns ``tests/realcli/node_modules/.bin``. It runs ``npm ci``
(exactly what ``package-lock.json`` pins, from the configured npm registry) only when
``node_modules`` is missing or does not match the lock file, and it checks that
``claude`` is the real native binary rather than the placeholder stub that stays in
place when npm skipped the package's postinstall (if so it runs that postinstall,
``node install.cjs``, which only hard-links the already downloaded platform binary).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
BIN_DIR = NODE_MODULES / ".bin"
CLI_NAMES = ("claude", "codex", "gemini", "copilot", "qwen", "opencode")
_CLAUDE_PKG = NODE_MODULES / "@anthropic-ai" / "claude-code"
_STUB_MAX_BYTES = 1 << 20  # the placeholder is a few KB; the real binary is ~245 MB
NPM_CI_TIMEOUT_S = 1200


class RealCliUnavailable(RuntimeError):
    """node/npm are missing, or the pinned CLIs could not be installed."""


def _pinned_versions() -> dict[str, str]:
    """Top-level packages and their versions as package-lock.json pins them."""
    lock = json.loads((HERE / "package-lock.json").read_text())
    wanted = json.loads((HERE / "package.json").read_text())["dependencies"]
    packages = lock.get("packages", {})
    return {name: packages.get(f"node_modules/{name}", {}).get("version", "?") for name in wanted}


def _problems() -> list[str]:
    """Why the current node_modules is not usable (empty list: it is)."""
    problems = []
    for name, version in _pinned_versions().items():
        manifest = NODE_MODULES / name / "package.json"
        try:
            installed = json.loads(manifest.read_text()).get("version")
        except (OSError, ValueError):
            problems.append(f"{name} is not installed")
            continue
        if installed != version:
            problems.append(f"{name} is {installed}, the lock pins {version}")
    for cli in CLI_NAMES:
        if not (BIN_DIR / cli).exists():
            problems.append(f"node_modules/.bin/{cli} is missing")
    return problems


def _claude_is_stub() -> bool:
    exe = _CLAUDE_PKG / "bin" / "claude.exe"
    try:
        return exe.stat().st_size < _STUB_MAX_BYTES
    except OSError:
        return True


def _run(argv: list[str], cwd: Path, timeout: float) -> None:
    try:
        proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RealCliUnavailable(f"`{' '.join(argv)}` did not finish in {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RealCliUnavailable(f"`{' '.join(argv)}` in {cwd} failed with exit {proc.returncode}:\n{tail}")


def ensure_real_clis() -> Path:
    """Install the pinned CLIs if needed; return the ``node_modules/.bin`` directory.

    Raises :class:`RealCliUnavailable` with a readable reason when node/npm are
    missing or the install fails.
    """
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        raise RealCliUnavailable(
            f"{missing} not found on PATH: the real-CLI tests need Node.js >= 20 with npm "
            f"(then `npm ci` in {HERE} installs the pinned CLIs)"
        )
    key = hashlib.sha256(str(HERE).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"realcli-install-{key}.lock"
    with open(lock_path, "w") as lock_file:  # one installer at a time (npm ci wipes node_modules)
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        problems = _problems()
        if problems:
            _run([npm, "ci", "--no-audit", "--no-fund"], HERE, NPM_CI_TIMEOUT_S)
            problems = _problems()
            if problems:
                raise RealCliUnavailable("after `npm ci`: " + "; ".join(problems))
        if _claude_is_stub():
            # npm skipped claude-code's postinstall (ignore-scripts, or an allowScripts
            # policy that blocks it): run it now; it links the platform binary in place.
            _run([node, "install.cjs"], _CLAUDE_PKG, 300)
            if _claude_is_stub():
                raise RealCliUnavailable(
                    f"{_CLAUDE_PKG / 'bin' / 'claude.exe'} is still the placeholder stub: "
                    "the platform package @anthropic-ai/claude-code-<os>-<arch> is missing "
                    "(installed with --omit=optional?)"
                )
    return BIN_DIR


def real_cli_versions(bin_dir: Path | None = None) -> dict[str, str]:
    """``--version`` of each installed CLI (for reports)."""
    bin_dir = bin_dir or BIN_DIR
    out = {}
    for cli in CLI_NAMES:
        proc = subprocess.run(
            [str(bin_dir / cli), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NO_COLOR": "1"},
        )
        out[cli] = (proc.stdout or proc.stderr).strip()
    return out


if __name__ == "__main__":
    print(ensure_real_clis())
    print(real_cli_versions())
