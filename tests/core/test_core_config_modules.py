"""``dockline.core.config`` is the one import path for settings, whatever module holds them."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from pydantic import BaseModel

import dockline.core.config as config

PRIVATE = [
    "dockline.core._sections",
    "dockline.core._sections_ops",
    "dockline.core._settings",
    "dockline.core._datadir",
]


@pytest.mark.parametrize("name", PRIVATE)
def test_every_name_of_a_private_module_is_importable_from_config(name: str) -> None:
    module = importlib.import_module(name)
    for member in module.__all__:
        assert getattr(config, member, None) is getattr(module, member), (
            f"{name}.{member} is not re-exported by dockline.core.config"
        )


def _sections(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for field in model.model_fields.values():
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += _sections(annotation)
    return found


def test_every_section_of_the_document_is_importable_from_config() -> None:
    sections = _sections(config.DocklineConfig)
    assert len(sections) > 15  # the monitor subsections and train.slices included
    for section in sections:
        assert getattr(config, section.__name__, None) is section, section.__name__
