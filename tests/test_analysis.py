"""Config validation: every wrong field is named in one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from diag.analysis import config_from_dict, config_to_dict
from diag.errors import DiagError


@dataclass(frozen=True)
class Example:
    steps: int = 10
    lr: float = 0.1
    mode: Literal["a", "b"] = "a"
    layers: tuple[int, ...] = (0,)
    name: str | None = None


def test_roundtrip_and_coercion() -> None:
    config = config_from_dict(Example, {"steps": 3, "lr": 1, "layers": [1, 2], "name": None})
    assert config == Example(steps=3, lr=1.0, layers=(1, 2))
    assert config_from_dict(Example, config_to_dict(config)) == config


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"stpes": 3}, "unknown field(s) stpes"),
        ({"steps": "3"}, "Example.steps"),
        ({"steps": True}, "Example.steps"),
        ({"mode": "c"}, "Example.mode"),
        ({"layers": 3}, "Example.layers"),
        ({"layers": [1, "x"]}, "Example.layers"),
    ],
)
def test_bad_fields_are_named(data: dict, needle: str) -> None:
    with pytest.raises(DiagError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(Example, data)
