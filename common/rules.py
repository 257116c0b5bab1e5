"""Value rules for config fields, checked when a config dataclass is constructed.

A rule is a function of the value that returns ``None`` when the value is allowed and
otherwise one phrase saying what is allowed (``"must be at least 1"``). ``checked(default,
rule)`` declares a dataclass field with its rule; ``check_fields`` runs every field's rule and
raises a one-line ``ConfigError`` naming the dotted kebab-case key and the value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from common.errors import ConfigError

Rule = Callable[[Any], str | None]
_RULE = "medfed-rule"


def checked(default: Any, rule: Rule) -> Any:
    """A dataclass field with ``default`` whose values must pass ``rule``."""
    return dataclasses.field(default=default, metadata={_RULE: rule})


def config_key(section: str, name: str) -> str:
    """The dotted kebab-case key of a section's field (``train.batch-size``)."""
    return f"{section}.{name.replace('_', '-')}"


def refuse(key: str, value: object, problem: str) -> ConfigError:
    """The one-line error for a refused setting."""
    return ConfigError(f"config key '{key}' = {value!r}: {problem}")


def check_fields(section: str, instance: object) -> None:
    """Run the rule of every field of the dataclass ``instance`` of config ``section``."""
    for spec in dataclasses.fields(instance):  # type: ignore[arg-type]
        value = getattr(instance, spec.name)
        expected = type(spec.default)
        if spec.default is not dataclasses.MISSING and not _has_type(value, expected):
            raise refuse(config_key(section, spec.name), value, f"expects {expected.__name__}")
        rule = spec.metadata.get(_RULE)
        problem = rule(value) if rule else None
        if problem:
            raise refuse(config_key(section, spec.name), value, problem)


def _has_type(value: object, expected: type) -> bool:
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def one_of(choices: Iterable[object]) -> Rule:
    """The value is one of ``choices``."""
    allowed = tuple(choices)
    shown = ", ".join(str(choice) for choice in allowed)
    return lambda value: None if value in allowed else f"expected one of {shown}"


def at_least(low: float) -> Rule:
    """``value >= low``."""
    return lambda value: None if value >= low else f"must be at least {low}"


def above(low: float) -> Rule:
    """``value > low``."""
    return lambda value: None if value > low else f"must be greater than {low}"


def within(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Rule:
    """``value`` in the interval from ``low`` to ``high`` (closed unless said open)."""
    shown = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def rule(value: float) -> str | None:
        above_low = value > low if open_low else value >= low
        below_high = value < high if open_high else value <= high
        return None if above_low and below_high else f"must be in {shown}"

    return rule


def not_empty(value: str) -> str | None:
    """A non-blank string."""
    return None if value.strip() else "must not be empty"
