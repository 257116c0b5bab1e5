"""Scenario files and the ``medfed simulate`` command line (no simulation is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import MedfedConfig
from common.errors import ConfigError
from medfed.cli import main
from simulations.scenario import available_scenarios, load_scenario
from simulations.sites import site_splits
from tests._fed_helpers import DATA_ROOT


def test_the_four_shipped_scenarios_load_and_describe_themselves() -> None:
    names = set(available_scenarios())
    assert {"demo", "pneumonia-5-noniid", "hospitals-20-dropout", "hospitals-100-quantity"} <= names
    for name in names:
        scenario = load_scenario(name, DATA_ROOT)
        config = scenario.config()
        assert scenario.description and config.run.name == scenario.name
        if config.partition.pool:
            assert (
                Path(config.partition.pool).is_absolute() and Path(config.partition.pool).is_file()
            )


@pytest.mark.parametrize(
    ("name", "sites", "kind", "dropout", "sampled"),
    [
        ("pneumonia-5-noniid", 5, "dirichlet", 0.0, 1.0),
        ("hospitals-20-dropout", 20, "dirichlet", 0.2, 0.5),
        ("hospitals-100-quantity", 100, "quantity", 0.0, 0.1),
    ],
)
def test_partitioned_scenarios_partition_the_real_pool(name, sites, kind, dropout, sampled) -> None:
    config = load_scenario(name, DATA_ROOT).config()
    assert (config.federation.num_sites, config.partition.kind) == (sites, kind)
    assert (config.simulation.dropout, config.federation.fraction_train) == (dropout, sampled)
    labels, splits = site_splits(config)
    assert len(splits) == sites
    assert sum(len(s.train) + len(s.test) for s in splits) == len(labels) == 4708


def test_overrides_win_over_the_scenario() -> None:
    config = load_scenario("demo").config(
        {"federation.num-rounds": 7, "strategy.name": "fedmedian"}
    )
    assert (config.federation.num_rounds, config.strategy.name) == (7, "fedmedian")


def test_bad_scenario_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[federation]\nnum-hospitals = 3\n')
    with pytest.raises(
        ConfigError, match=r"scenario .*bad.toml: unknown config key 'federation.num-hospitals'"
    ):
        load_scenario(str(bad))
    with pytest.raises(ConfigError, match="no scenario 'nope'"):
        load_scenario("nope")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate"], "give a SCENARIO"),
        (["simulate", "demo", "--set", "rounds"], "--set expects KEY=VALUE, got 'rounds'"),
        (["simulate", "demo", "--set", "strategy.nme=fedavg"], "unknown config key 'strategy.nme'"),
        (["simulate", "--resume", "/nonexistent/run"], "is not a medfed run directory"),
        (["simulate", "demo", "--rounds", "0"], "must be at least 1"),
    ],
)
def test_simulate_input_errors_are_one_line(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("medfed: error: ") and message in err and err.count("\n") == 1


def test_simulate_lists_the_scenarios(capsys) -> None:
    assert main(["simulate", "--list"]) == 0
    out = capsys.readouterr().out
    assert "hospitals-100-quantity" in out and "power-law" in out


# Defaults a scenario states on purpose: what the scenario is about, named in its description.
# the label skew is what these scenarios are about (issue 19's table rows: Dirichlet 0.5)
MEANINGFUL_RESTATEMENTS = {("pneumonia-5-noniid", "partition.alpha")} | {
    (f"{data}-5-dirichlet-{setting}", "partition.alpha")
    for data in ("pneumonia", "breast", "retina")
    for setting in ("nondp", "dp8", "dp2")
}


def test_scenarios_do_not_restate_the_config_defaults() -> None:
    defaults = MedfedConfig().to_flat()

    restated = {
        (name, key)
        for name in available_scenarios()
        for key, value in load_scenario(name, DATA_ROOT).settings.items()
        if key != "partition.pool" and value == defaults[key]
    }

    assert restated <= MEANINGFUL_RESTATEMENTS, f"drop these from the scenario files: {restated}"


def test_the_demo_scenario_is_the_defaults_plus_the_private_training_recipe() -> None:
    demo, defaults = load_scenario("demo").config().to_flat(), MedfedConfig().to_flat()

    changed = {key for key, value in defaults.items() if demo[key] != value}

    # FedAvgM, one DP-SGD step per round at the same sample rate everywhere, more rounds
    assert changed == {
        "federation.num-rounds",
        "strategy.name",
        "strategy.server-lr",
        "train.local-steps",
        "train.batches-per-epoch",
        "train.learning-rate",
        "train.momentum",
    }


@pytest.mark.parametrize("data", ["pneumonia", "breast", "retina"])
def test_quality_table_scenarios_score_the_official_splits_and_take_a_seed(data: str) -> None:
    import argparse

    from medfed.commands.simulate import parse_overrides
    from server.public_eval import server_split_enabled

    settings = {}
    for setting in ("nondp", "dp8", "dp2"):
        scenario = load_scenario(f"{data}-5-dirichlet-{setting}", DATA_ROOT)
        args = argparse.Namespace(set=[], rounds=None, sites=None, seed=2, runs_dir=None)
        config = scenario.config(parse_overrides(args))
        settings[setting] = config
        assert config.run.seed == 2
        assert config.eval.server_split == "official" and server_split_enabled(config)
        assert config.federation.num_sites == 5 and config.partition.kind == "dirichlet"
        assert config.partition.alpha == 0.5 and config.partition.split == "train"
    assert not settings["nondp"].privacy.enabled
    assert settings["dp8"].privacy.target_epsilon == 8.0 and settings["dp8"].privacy.enabled
    assert settings["dp2"].privacy.target_epsilon == 2.0 and settings["dp2"].privacy.enabled
    if data == "retina":  # 5 grades, RGB
        shape = {(c.data.channels, c.model.num_classes) for c in settings.values()}
        assert shape == {(3, 5)}
