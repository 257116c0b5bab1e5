"""Scenario files: a named, reviewable TOML description of one simulated federation.

A scenario has ``name`` and ``description`` at the top and one table per config section,
with the same keys as the run config (``[federation] num-sites = 5`` is
``federation.num-sites``). A relative ``partition.pool`` is resolved against the data root
(default ``../shared/data`` beside the repository). Scenarios ship in
``simulations/scenarios/`` and are found by file name without ``.toml``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import MedfedConfig
from common.errors import ConfigError

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario: its name, one-line description and the run config it implies."""

    name: str
    description: str
    path: Path
    settings: dict[str, Any]

    def config(self, overrides: Mapping[str, Any] | None = None) -> MedfedConfig:
        """The typed config: ``MedfedConfig`` defaults < scenario < ``overrides``."""
        flat = {"run.name": self.name, **self.settings, **(overrides or {})}
        return MedfedConfig.from_flat(flat)


def available_scenarios() -> dict[str, Path]:
    """Scenario name -> file, for the files shipped in ``simulations/scenarios/``."""
    return {path.stem: path for path in sorted(SCENARIO_DIR.glob("*.toml"))}


def find_scenario(name_or_path: str) -> Path:
    """A scenario file from a path or a shipped scenario's name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = available_scenarios()
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise ConfigError(
        f"no scenario '{name_or_path}': not a file, and not one of {', '.join(shipped) or '-'}"
    )


def load_scenario(name_or_path: str, data_root: Path = DEFAULT_DATA_ROOT) -> Scenario:
    """Read and check a scenario file (unknown keys are an error)."""
    path = find_scenario(name_or_path)
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as problem:
        raise ConfigError(f"scenario {path}: {problem}") from None
    name = str(document.pop("name", path.stem))
    description = str(document.pop("description", ""))
    settings: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"scenario {path}: '{section}' must be a [table] of settings")
        for key, value in table.items():
            settings[f"{section}.{key}"] = value
    pool = settings.get("partition.pool")
    if pool and not Path(str(pool)).expanduser().is_absolute():
        settings["partition.pool"] = str((data_root / str(pool)).resolve())
    scenario = Scenario(name, description, path.resolve(), settings)
    try:
        scenario.config()  # fail now, naming the file, if a key or value is wrong
    except ConfigError as problem:
        raise ConfigError(f"scenario {path}: {problem}") from None
    return scenario
