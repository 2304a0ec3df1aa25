"""``launch.json``, how a session was first started, read back by ``orchestrate resume``.

``launch_before_request.json`` is the launch.json of a real demo session
(``orchestrate "Add a /health endpoint" --demo --no-dashboard``) written before launch options
became one frozen request: files of that format must still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from meta_orchestrator.actors.history.resume import LAUNCH_FILE, LaunchRecord, ResumeError, load_launch, save_launch
from meta_orchestrator.config.settings import ConfigError, Settings, with_overrides

OLD_LAUNCH = Path(__file__).with_name("launch_before_request.json")


def _session_with(folder: Path, launch: Path | str) -> Path:
    folder.mkdir(parents=True)
    if isinstance(launch, Path):
        shutil.copyfile(launch, folder / LAUNCH_FILE)
    else:
        (folder / LAUNCH_FILE).write_text(launch)
    (folder / "state.json").write_text(json.dumps({"session_id": folder.name, "status": "waiting"}))
    return folder


def test_a_launch_json_written_before_the_request_still_loads(tmp_path: Path) -> None:
    folder = _session_with(tmp_path / "20261207-002608-18190a", OLD_LAUNCH)
    first, state = load_launch(folder)
    raw = json.loads(OLD_LAUNCH.read_text())
    assert (first.task, first.target, first.demo) == (raw["task"], Path(raw["target"]), True)
    assert state == {"session_id": folder.name, "status": "waiting"}
    settings = Settings.model_validate(first.settings)
    assert "meta_orchestrator.actors.agents.demo claude" in settings.agents["claude"].command
    # A resume's flags go over them; the record itself stays as it was.
    resumed = with_overrides(first.settings, {"web.port": 8123, "questions.unattended": "defaults"}, LAUNCH_FILE)
    assert (resumed.web.port, resumed.questions.unattended) == (8123, "defaults")
    assert resumed.session == settings.session
    assert first.settings["web"]["port"] == raw["settings"]["web"]["port"]
    with pytest.raises(ValidationError):
        first.task = "something else"  # type: ignore[misc]  # frozen: what the first start asked stays


def test_save_then_load_gives_the_same_record(tmp_path: Path) -> None:
    first = LaunchRecord(task="t", target=tmp_path / "app", demo=False, settings=Settings().model_dump(mode="json"))
    folder = _session_with(tmp_path / "s1", "{}")
    save_launch(folder, first)
    assert load_launch(folder).launch == first
    assert set(json.loads((folder / LAUNCH_FILE).read_text())) == {"task", "target", "demo", "settings"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"task": "t", "demo": false, "settings": {}}', "target: Field required"),
        ('{"task": "t", "target": "/x", "demo": "sometimes", "settings": {}}', "demo:"),
        ("[1, 2]", "not a launch record"),
        ("{not json", "cannot read"),
    ],
)
def test_a_broken_launch_json_is_refused_with_what_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    folder = _session_with(tmp_path / "s1", text)
    with pytest.raises(ResumeError, match=words):
        load_launch(folder)


def test_saved_settings_that_no_longer_validate_are_named(tmp_path: Path) -> None:
    raw = json.loads(OLD_LAUNCH.read_text())
    raw["settings"]["web"]["port"] = "eighty"
    with pytest.raises(ConfigError, match=r"launch.json has 1 problem\(s\):\n  web.port"):
        with_overrides(raw["settings"], {}, LAUNCH_FILE)
