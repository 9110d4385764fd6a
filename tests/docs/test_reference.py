"""The reference pages list every setting, command and dead-letter reason, and are current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from reference_pages import PAGES, REPO
from typer.main import get_command

from dockline.cli import app
from dockline.cli._config import settings
from dockline.core.config import DocklineConfig
from dockline.core.contracts import RejectReason


@pytest.mark.parametrize("page", sorted(PAGES))
def test_generated_pages_are_current(page: str) -> None:
    on_disk = (REPO / page).read_text(encoding="utf-8")
    assert on_disk == PAGES[page](), (
        f"{page} is out of date: run python tests/docs/reference_pages.py"
    )


def test_the_config_page_lists_every_key_with_a_meaning() -> None:
    page = (REPO / "docs/reference/config.md").read_text(encoding="utf-8")
    for key, description, _ in settings(DocklineConfig):
        section, name = key.rsplit(".", 1)
        assert description, f"{key} has no docstring in core/_sections*.py"
        assert f"## [{section}]" in page
        assert re.search(rf"^\| `{name}` \| .+ \| .+ \|$", page, re.MULTILINE), key


def test_the_commands_page_lists_every_command_and_option() -> None:
    page = (REPO / "docs/reference/commands.md").read_text(encoding="utf-8")

    def walk(command: object, path: tuple[str, ...]) -> None:
        assert f"## `{' '.join(('dockline', *path))}`" in page
        for param in getattr(command, "params", []):
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}" in page, (path, opt)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(get_command(app), ())


def test_every_dead_letter_reason_has_a_meaning_and_a_fix() -> None:
    page = (REPO / "docs/deadletters.md").read_text(encoding="utf-8")
    sections = re.split(r"^### ", page, flags=re.MULTILINE)[1:]
    documented = {section.split("\n", 1)[0].strip("` ") for section in sections}
    assert documented == {reason.value for reason in RejectReason}
    for section in sections:
        assert "**Meaning.**" in section and "**Fix.**" in section, section[:40]


def test_the_docs_link_the_references() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in ("docs/reference/config.md", "docs/reference/commands.md", "docs/deadletters.md",
                 "docs/mlflow.md"):  # fmt: skip
        assert page in readme and Path(REPO / page).exists()
