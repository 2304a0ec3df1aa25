"""``ORCHESTRATE_REAL_CLI_BIN``: the real-CLI tier against another set of CLIs (e.g. the latest).

The folder it names is checked, never installed into: every CLI the tier drives must be
there and ``claude`` must be the native binary, or the error says what is missing and how
to fill the folder. The installer of the latest releases refuses the pinned folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.realcli.install as install
from tests.realcli.install import BIN_ENV, CLI_NAMES, RealCliUnavailable, ensure_real_clis, install_latest


def _bin_folder(root: Path, *, claude_bytes: int, leave_out: str | None = None) -> Path:
    """A node_modules/.bin laid out as npm does, ``claude`` linked to a binary of that size."""
    exe = root / "node_modules" / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"
    exe.parent.mkdir(parents=True)
    with open(exe, "wb") as handle:
        handle.truncate(claude_bytes)  # sparse: the size is what tells the stub from the binary
    bin_dir = root / "node_modules" / ".bin"
    bin_dir.mkdir()
    for cli in CLI_NAMES:
        if cli != leave_out:
            (bin_dir / cli).symlink_to(exe)
    return bin_dir


@pytest.fixture
def no_npm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing a folder must not need node/npm (nothing is installed into it)."""
    monkeypatch.setattr(install.shutil, "which", lambda name: None)


@pytest.mark.usefixtures("no_npm")
def test_the_named_folder_is_used_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _bin_folder(tmp_path, claude_bytes=8 << 20)
    monkeypatch.setenv(BIN_ENV, str(bin_dir))
    assert ensure_real_clis() == bin_dir.resolve()
    assert not (tmp_path / "package.json").exists()  # nothing was installed there


@pytest.mark.usefixtures("no_npm")
def test_a_folder_without_a_cli_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _bin_folder(tmp_path, claude_bytes=8 << 20, leave_out="codex")
    monkeypatch.setenv(BIN_ENV, str(bin_dir))
    with pytest.raises(RealCliUnavailable, match=r"has no codex .*--latest DIR"):
        ensure_real_clis()


@pytest.mark.usefixtures("no_npm")
def test_a_folder_whose_claude_is_the_stub_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _bin_folder(tmp_path, claude_bytes=4096)
    monkeypatch.setenv(BIN_ENV, str(bin_dir))
    with pytest.raises(RealCliUnavailable, match="placeholder stub"):
        ensure_real_clis()


def test_latest_never_installs_over_the_pinned_lock() -> None:
    lock = install.HERE / "package-lock.json"
    before = lock.read_bytes()
    with pytest.raises(RealCliUnavailable, match="holds the pinned lock"):
        install_latest(install.HERE)
    assert lock.read_bytes() == before


def test_the_command_line_reports_a_missing_folder_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BIN_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as stop:
        install.main([])
    assert str(stop.value).startswith("error: ") and "has no claude" in str(stop.value)
