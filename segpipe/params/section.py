"""The base of every params section, and how a validator refuses a value the catalog names a problem with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, values are checked strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no .inf / .nan anywhere


def refuse(problem: str, value: Any) -> Any:
    """``value``, or a validation error when the catalog names a ``problem`` with it."""
    if problem:
        raise ValueError(problem)
    return value
