"""The distribution installs one top-level package and lives beside PyPI's ``config``.

The wheel is built from this checkout offline (no index, no build isolation), installed into
a folder of its own, and a whole demo session runs from that copy while PyPI's ``config``
0.5.1 (a test dependency) stays importable as ``config``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

TIMEOUT = 90


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(PROJECT_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("meta_orchestrator-*.whl")
    return found


def test_the_wheel_holds_exactly_one_top_level_package(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"meta_orchestrator"}
    assert "meta_orchestrator/webui/static/index.html" in names
    assert not [n for n in names if n.startswith("meta_orchestrator/tests/")]


def test_installed_beside_pypi_config_a_demo_session_completes(wheel: Path, tmp_path: Path):
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin") == [
        "meta_orchestrator"
    ]

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATE_DEMO")}
    env.update(PYTHONPATH=str(site), ORCHESTRATE_DEMO_PACE="0")
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import config, meta_orchestrator.config.settings as s, meta_orchestrator.actors.agents.worker as w;"
            "print(config.__file__); print(s.__file__); print(w.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    pypi_config, *ours = probe.stdout.splitlines()
    assert "site-packages" in pypi_config and str(site) not in pypi_config
    assert all(path.startswith(str(site)) for path in ours), ours  # the wheel's copy, not the checkout

    session = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from meta_orchestrator.actors.app.launcher import main;sys.exit(main(sys.argv[1:]))",
            "Add a /health endpoint",
            "--demo",
            "--no-dashboard",
            "--workspace",
            str(tmp_path / "ws"),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert session.returncode == 0, session.stdout[-2000:] + session.stderr[-2000:]
    (folder,) = (tmp_path / "ws").iterdir()
    assert (folder / "state.json").is_file()
