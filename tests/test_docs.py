"""The documentation stays true: generated pages match the code, links resolve, the README
stays a first page, and the site builds offline.

The generated pages are written by ``tests/docs_pages.py`` (``.venv/bin/python -m tests.docs_pages``).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import stat
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tests import docs_pages
from tests.conftest import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
README_MAX_CHARS = 15_000
README_MAX_LINE = 300


# --- the generated pages -------------------------------------------------------------------------


@pytest.mark.parametrize("relative", sorted(docs_pages.PAGES))
def test_a_generated_page_matches_the_code(relative: str):
    path = PROJECT_ROOT / relative
    assert path.is_file(), f"{relative} is missing; run: {docs_pages.REGENERATE}"
    committed = path.read_text(encoding="utf-8")
    assert committed == docs_pages.PAGES[relative](), f"{relative} differs from the code; run: {docs_pages.REGENERATE}"


def test_the_check_command_names_a_drifted_page(tmp_path: Path):
    """``--check`` (what a developer runs) fails on a page that differs, and names it."""
    for relative, render in docs_pages.PAGES.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(render(), encoding="utf-8")
    assert docs_pages.drifted(tmp_path) == []
    page = tmp_path / "docs/reference/configuration.md"
    page.write_text(page.read_text(encoding="utf-8").replace("`1800`", "`1900`"), encoding="utf-8")
    assert docs_pages.drifted(tmp_path) == ["docs/reference/configuration.md"]


def test_the_configuration_reference_holds_every_setting():
    from meta_orchestrator.config.settings import Settings

    page = docs_pages.configuration_page()
    defaults = Settings()
    assert "| `assignment_timeout_s` | number (> 0) | `1800` |" in page
    assert "gemini: `0.4`, codex: `0.1`, claude: `0.4`" in page  # each agent's own default share
    for section in ("session", "web", "review", "recovery", "limits", "sandbox", "questions", "cluster", "notify"):
        assert f"## `[{section}]`" in page
        for name, field in type(getattr(defaults, section)).model_fields.items():
            if docs_pages.section_of(field.annotation) is None:
                assert f"| `{name}` |" in page, f"[{section}] {name} is not in the reference"
    assert "## `[[recovery.patterns]]`" in page and "## `[limits.agents.<name>]`" in page


def test_every_setting_says_what_it_does():
    """A plain key without a description would leave an empty cell in the reference."""
    from meta_orchestrator.config import settings

    bare = []
    for model in (m for m in vars(settings).values() if isinstance(m, type) and issubclass(m, settings.Section)):
        for name, field in model.model_fields.items():
            if docs_pages.section_of(field.annotation) is None and not field.description:
                bare.append(f"{model.__name__}.{name}")
    assert bare == []


def test_the_command_reference_holds_every_command_and_describes_every_argument():
    from meta_orchestrator.actors.app.launcher import SUBCOMMANDS, command_parsers

    parsers = command_parsers()
    assert set(parsers) == {"orchestrate", *SUBCOMMANDS}
    page = docs_pages.commands_page()
    undescribed = []
    for name, parser in parsers.items():
        assert f"## `{parser.prog}`" in page, name
        for action in parser._actions:
            if not action.help:
                undescribed.append(f"{name} {action.option_strings or action.dest}")
    assert undescribed == []
    assert "| `--last N` | `20` |" in page


def test_the_command_reference_says_what_the_parser_accepts():
    """The page is made from the parsers the launcher itself runs: a flag the page lists parses."""
    from meta_orchestrator.actors.app.launcher import command_parsers

    show = command_parsers()["show"]
    opts = show.parse_args(["20261206-231216-0a7577", "--follow", "--last", "5"])
    assert (opts.session_id, opts.follow, opts.last) == ("20261206-231216-0a7577", True, 5)
    with pytest.raises(SystemExit):
        show.parse_args(["../escape"])


def test_the_wire_frames_page_lists_every_frame_and_request():
    from meta_orchestrator.messages import frames, gateway

    page = docs_pages.wire_frames_page()
    for frame in [*docs_pages.members(frames.SingleFrame), frames.BatchFrame]:
        assert f"| `{frame.model_fields['type'].default}` |" in page
    for request in docs_pages.members(gateway.BrowserRequest):
        assert f"### {request.__name__}" in page
    assert "### SessionSnapshot" in page and "### TreeSample" in page  # nested types are listed too


def test_the_architecture_picture_names_real_actors_and_messages():
    messages = importlib.import_module("meta_orchestrator.messages")
    known: set[str] = set()
    for module in Path(messages.__path__[0]).glob("*.py"):
        known.update(dir(importlib.import_module(f"meta_orchestrator.messages.{module.stem}")))
    for actor, (_title, module, _x, _y) in docs_pages.ACTORS.items():
        if actor not in docs_pages.OUTSIDE:
            assert (PROJECT_ROOT / module).is_file(), f"{actor}: {module} is gone"
    for source, target, labels in docs_pages.MESSAGES:
        assert source in docs_pages.ACTORS and target in docs_pages.ACTORS
        for label in labels:
            assert label.startswith("'") or label in known, f"{label} is no message class in messages/"


_TOML = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _toml_examples() -> list[tuple[str, str]]:
    return [
        (f"{path.name}[{n}]", block)
        for path in sorted(DOCS.glob("*.md"))
        for n, block in enumerate(_TOML.findall(path.read_text(encoding="utf-8")))
    ]


@pytest.mark.parametrize(("where", "block"), _toml_examples(), ids=[w for w, _ in _toml_examples()])
def test_every_toml_example_in_the_guides_is_a_valid_configuration(where: str, block: str, tmp_path: Path):
    from meta_orchestrator.config.settings import ConfigError, load_settings

    example = tmp_path / "example.toml"
    example.write_text(block, encoding="utf-8")
    try:
        load_settings(example)
    except ConfigError as exc:
        pytest.fail(f"the TOML in {where} is refused by config/settings.py: {exc}")


def _differences(given: dict, defaults: dict, path: str = "") -> list[str]:
    found = []
    for key, value in given.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            found += _differences(value, default, f"{path}{key}.")
        elif value != default:
            found.append(f"{path}{key} = {value!r} (the code: {default!r})")
    return found


def test_the_configuration_guide_states_the_defaults_of_the_code():
    """docs/configuration.md shows "every key, with its default": each value it shows is the code's."""
    import tomllib

    from meta_orchestrator.config.settings import Settings

    (block,) = _TOML.findall((DOCS / "configuration.md").read_text(encoding="utf-8"))
    defaults = Settings().model_dump(mode="json")
    # Two placeholders the page explains: the command is the CLI's own name, no model is "".
    shown = _differences(tomllib.loads(block), defaults)
    assert [d for d in shown if not re.match(r"agents\.\w+\.(command|model) ", d)] == []


# --- the README and the links ------------------------------------------------------------------------

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_the_readme_is_a_first_page():
    text = README.read_text(encoding="utf-8")
    assert len(text) < README_MAX_CHARS, f"README.md is {len(text)} characters; move reference text into docs/"
    long = [n for n, line in enumerate(text.splitlines(), 1) if len(line) > README_MAX_LINE]
    assert long == [], f"README.md lines over {README_MAX_LINE} characters: {long}"


def test_the_readme_opens_with_exactly_two_commands_and_ci_runs_the_second():
    """Before its first section: the demo and the test command, one line each; .ci/run runs the
    test command as it is written."""
    text = README.read_text(encoding="utf-8")
    top = text.split("\n## ", 1)[0]
    blocks = [block.strip() for block in _FENCE.findall(top)]
    assert len(blocks) == 2, blocks
    assert all("\n" not in block for block in blocks), blocks
    demo, tests = blocks
    assert "orchestrate" in demo and "--demo" in demo
    assert tests.endswith("-m pytest")
    assert tests in (PROJECT_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def slug(heading: str) -> str:
    """A heading's anchor as the site makes it (Python-Markdown's toc slugify)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's words, not its address
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code, where a link is no link."""
    return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_relative_link_resolves(document: Path):
    broken = []
    for match in _LINK.finditer(_prose(document.read_text(encoding="utf-8"))):
        address = match.group(1) or match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", address):  # https:, mailto: ...
            continue
        file_part, _, anchor = address.partition("#")
        target = (document.parent / file_part).resolve() if file_part else document
        if not target.exists():
            broken.append(
                f"{address} (no {target.relative_to(PROJECT_ROOT) if target.is_relative_to(PROJECT_ROOT) else target})"
            )
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{address} (no heading #{anchor} in {target.name})")
    assert broken == [], f"{document.relative_to(PROJECT_ROOT)}: broken links: {broken}"


def test_the_link_check_sees_a_broken_link_and_anchor(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n## Files of a session\n\n[gone](missing.md) [here](#files-of-a-session) `[no](x.md)`\n"
    )
    found = [m.group(1) for m in _LINK.finditer(_prose(page.read_text()))]
    assert found == ["missing.md", "#files-of-a-session"]
    assert anchors(page) == {"a-page", "files-of-a-session"}
    assert slug("Peer reviews (`actors/reviews/reviewer.py`)") == "peer-reviews-actorsreviewsreviewerpy"


# --- the site ------------------------------------------------------------------------------------


def _mkdocs() -> str:
    path = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed (.ci/run installs the docs extra: pip install -e '.[docs]')")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    return path


_REMOTE_LOAD = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)


def test_ci_installs_the_docs_extra_and_builds_the_site_with_warnings_as_errors():
    lines = (PROJECT_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    install = next(n for n, line in enumerate(lines) if "install -q -e '.[docs]'" in line)
    tests = next(n for n, line in enumerate(lines) if line.endswith("-m pytest"))
    assert install < tests  # the suite builds the site too
    assert any(line.endswith(".venv/bin/mkdocs build --strict") for line in lines)


def test_the_site_builds_strict_and_loads_nothing_from_the_network(tmp_path: Path):
    site = tmp_path / "site"
    built = subprocess.run(
        [_mkdocs(), "build", "--strict", "--site-dir", str(site)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    pages = sorted(site.rglob("*.html"))
    assert (site / "index.html") in pages and (site / "reference" / "configuration.html") in pages
    remote = [str(p.relative_to(site)) for p in pages if _REMOTE_LOAD.search(p.read_text(encoding="utf-8"))]
    assert remote == [], f"pages that load something from the network: {remote}"
    css = " ".join(p.read_text(encoding="utf-8") for p in site.rglob("*.css"))
    assert "fonts.googleapis" not in css and "@import url(http" not in css
    assert (site / "architecture.svg").is_file()


# --- the files of a session -----------------------------------------------------------------------

SESSION_FILES_PAGE = DOCS / "reference" / "session-files.md"
WORKING_TREES = ("checkouts", "views", "demo-app")  # written by git with your umask, not by the session
AGENTS = ("gemini", "codex", "claude")


def _named_on_page() -> tuple[set[str], set[str]]:
    """The top-level entries the page's table names (``<agent>.jsonl``, ``reviews/``), and every
    name in backticks on the page."""
    text = SESSION_FILES_PAGE.read_text(encoding="utf-8")
    table = text.split("## The files", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split(" | ", 1)[0] for row in table.splitlines() if row.startswith("| `")]
    top = {re.sub(r"/.*", "/", name) for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)}
    return top, set(re.findall(r"`([^`]+)`", text))


def _generic(name: str) -> str:
    """A file name with its agent's name as the page writes it: ``claude.jsonl`` is ``<agent>.jsonl``."""
    return re.sub(rf"^({'|'.join(AGENTS)})\.", "<agent>.", name)


def test_the_files_of_a_session_page_names_what_a_session_writes_and_its_modes(tmp_path: Path, demo_env):
    """A demo session on a git repository (the demo app): every entry it leaves in its folder,
    and every file of its reviews and sandbox, is on the page; the session's own files are
    private as the page says (0600 files, 0700 folders)."""
    from meta_orchestrator.actors.app.system import LaunchRequest, run
    from meta_orchestrator.config.settings import load_settings

    settings = load_settings(None, {"workspace": str(tmp_path / "ws")})
    options = LaunchRequest(
        task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
    )
    assert run(settings, options) == 0
    (session,) = (tmp_path / "ws").iterdir()
    top_named, named = _named_on_page()
    assert {"state.json", "<agent>.jsonl", "reviews/", "git/"} <= top_named

    top = sorted(session.iterdir())
    missing = [p.name for p in top if _generic(p.name) + ("/" if p.is_dir() else "") not in top_named]
    inner = [*(session / "sandbox").iterdir(), *(f for r in (session / "reviews").iterdir() for f in r.iterdir())]
    assert inner, "the demo session made no review and no sandbox files"
    missing += [str(p.relative_to(session)) for p in inner if _generic(p.name) not in named]
    assert missing == [], f"{SESSION_FILES_PAGE.relative_to(PROJECT_ROOT)} does not name {missing}"

    loose = [
        f"{p.relative_to(session)}: {stat.S_IMODE(p.stat().st_mode):o}"
        for p in [session, *top, *inner]
        if p.name not in WORKING_TREES and stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)
    ]
    assert loose == [], "not private"
