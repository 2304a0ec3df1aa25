"""Make the pinned agent CLIs available: ``npm ci`` in this directory when needed.

``ensure_real_clis()`` returns ``tests/realcli/node_modules/.bin``. It runs ``npm ci``
(exactly what ``package-lock.json`` pins, from the configured npm registry) only when
``node_modules`` is missing or does not match the lock file, and it checks that
``claude`` is the real native binary rather than the placeholder stub that stays in
place when npm skipped the package's postinstall (if so it runs that postinstall,
``node install.cjs``, which only hard-links the already downloaded platform binary).

``ORCHESTRATE_REAL_CLI_BIN=<dir>`` names another ``node_modules/.bin`` to test instead (it is
checked, never installed into); ``python -m tests.realcli.install --latest DIR`` fills such a
folder with the latest release of each CLI in ``package.json`` (a package.json of its own in
DIR; the pinned lock is never touched) and prints the versions it got.
"""

from __future__ import annotations

import argparse
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
BIN_ENV = "ORCHESTRATE_REAL_CLI_BIN"  # another node_modules/.bin to test, e.g. the latest releases


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


def _claude_is_stub(package: Path = _CLAUDE_PKG) -> bool:
    exe = package / "bin" / "claude.exe"
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


def _chosen_bin(bin_dir: Path) -> Path:
    """The ``node_modules/.bin`` that ``ORCHESTRATE_REAL_CLI_BIN`` names, once it has every CLI."""
    hint = f"(`python -m tests.realcli.install --latest DIR` fills DIR/node_modules/.bin; {BIN_ENV}={bin_dir})"
    missing = [cli for cli in CLI_NAMES if not (bin_dir / cli).exists()]
    if missing:
        raise RealCliUnavailable(f"{bin_dir} has no {', '.join(missing)} {hint}")
    if _claude_is_stub(bin_dir.parent / "@anthropic-ai" / "claude-code"):
        raise RealCliUnavailable(f"claude in {bin_dir} is the placeholder stub, not the native binary {hint}")
    return bin_dir


def ensure_real_clis() -> Path:
    """Install the pinned CLIs if needed; return the ``node_modules/.bin`` directory
    (or the one ``ORCHESTRATE_REAL_CLI_BIN`` names, checked but never installed into).

    Raises :class:`RealCliUnavailable` with a readable reason when node/npm are
    missing or the install fails.
    """
    if os.environ.get(BIN_ENV):
        return _chosen_bin(Path(os.environ[BIN_ENV]).resolve())
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        raise RealCliUnavailable(
            f"{missing} not found on PATH: the real-CLI tests need Node.js >= 20 with npm "
            f"(then `npm ci` in {HERE} installs the pinned CLIs)"
        )
    if NODE_MODULES.is_symlink():
        # `npm ci` empties node_modules first: through a link it would wipe the folder it points at
        # (another checkout's CLIs). A hard-linked copy (`cp -al`) is safe; a link is refused.
        raise RealCliUnavailable(
            f"{NODE_MODULES} is a symbolic link to {os.readlink(NODE_MODULES)}: `npm ci` would empty that "
            "folder; replace it with a copy (`cp -al <other>/node_modules tests/realcli/`) or remove it"
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


def install_latest(folder: Path) -> dict[str, str]:
    """``npm install <cli>@latest`` for every CLI ``package.json`` pins, into ``folder`` (its
    own package.json and lock; never this directory). Returns package -> version installed."""
    folder = folder.resolve()
    if folder == HERE:
        raise RealCliUnavailable(f"{folder} holds the pinned lock; --latest needs another folder")
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise RealCliUnavailable("node and npm are needed on PATH to install the latest CLIs")
    pinned = json.loads((HERE / "package.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "package.json"
    if not manifest.exists():  # the scripts policy is the pinned one's: same packages, same trust
        own = {"name": "real-clis-latest", "private": True, "allowScripts": pinned.get("allowScripts", {})}
        manifest.write_text(json.dumps(own, indent=2) + "\n")
    wanted = [f"{name}@latest" for name in pinned["dependencies"]]
    _run([npm, "install", "--save-exact", "--no-audit", "--no-fund", *wanted], folder, NPM_CI_TIMEOUT_S)
    claude = folder / "node_modules" / "@anthropic-ai" / "claude-code"
    if _claude_is_stub(claude):
        _run([node, "install.cjs"], claude, 300)
    modules = folder / "node_modules"
    return {
        name: json.loads((modules / name / "package.json").read_text())["version"] for name in pinned["dependencies"]
    }


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.realcli.install", description=__doc__.split("\n\n")[0])
    parser.add_argument("--latest", metavar="DIR", type=Path, help="install the latest release of each CLI into DIR")
    args = parser.parse_args(argv)
    try:
        if args.latest is None:
            bin_dir = ensure_real_clis()
        else:
            got = install_latest(args.latest)
            pinned = _pinned_versions()
            for name, version in got.items():
                print(f"{name:28} {version:12} (pinned {pinned.get(name, '?')})")
            bin_dir = args.latest.resolve() / "node_modules" / ".bin"
    except RealCliUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{BIN_ENV}={bin_dir}")
    print(real_cli_versions(bin_dir))


if __name__ == "__main__":
    main()
