"""MedfedConfig: flat dotted keys <-> typed dataclasses, with one-line errors."""

from __future__ import annotations

import pytest

from common.config import MedfedConfig
from common.errors import ConfigError


def test_round_trip_preserves_every_value() -> None:
    config = MedfedConfig().replace(**{"privacy.target-epsilon": 2.5, "run.name": "x"})

    rebuilt = MedfedConfig.from_flat(config.to_flat())

    assert rebuilt == config
    assert rebuilt.privacy.target_epsilon == 2.5
    assert rebuilt.run.name == "x"


def test_values_from_cli_strings_are_coerced() -> None:
    config = MedfedConfig.from_flat(
        {"federation.num-rounds": "7", "privacy.enabled": "false", "privacy.delta": "1e-6"}
    )

    assert config.federation.num_rounds == 7
    assert config.privacy.enabled is False
    assert config.privacy.delta == pytest.approx(1e-6)


@pytest.mark.parametrize(
    ("flat", "fragment"),
    [
        ({"privacy.target-epsilom": 1.0}, "unknown config key 'privacy.target-epsilom'"),
        ({"nosection": 1}, "unknown config key 'nosection'"),
        ({"federation.num-rounds": "three"}, "expects int"),
        ({"privacy.enabled": 3}, "expects bool"),
    ],
)
def test_bad_keys_and_values_raise_one_line_errors(flat: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        MedfedConfig.from_flat(flat)

    assert fragment in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_pyproject_run_config_lists_every_key_with_its_default() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    run_config = pyproject["tool"]["flwr"]["app"]["config"]

    expected = MedfedConfig().to_flat()
    assert set(run_config) == set(expected)
    differing = {k for k in expected if run_config[k] != expected[k]}
    assert differing == {"run.name"}  # only the run's label differs from the CLI demo
