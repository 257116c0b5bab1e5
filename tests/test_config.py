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
        (
            {"model.name": "small-cnn-ws", "privacy.grad-sample-mode": "ew"},
            "'privacy.grad-sample-mode' = 'ew': expanded weights cannot",
        ),
        (
            {"model.name": "cnn-medium-ws", "privacy.grad-sample-mode": "ew"},
            "standardization of cnn-medium-ws: use hooks",
        ),
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


# -- values checked at construction ---------------------------------------------------------
BAD_VALUES = [
    ("data.image-size", -3, "must be at least 8"),
    ("data.channels", 2, "expected one of 1, 3"),
    ("data.test-fraction", 1.0, "must be in [0, 1)"),
    ("data.class-names", "normal", "distinct comma-separated class names"),
    ("data.frames", "every-other", "expected one of middle, all, stack"),
    ("data.resize", "crop", "expected one of stretch, pad"),
    ("data.stack-depth", 0, "must be at least 1"),
    ("model.name", "vgg", "expected one of small-cnn, cnn-medium, resnet18-gn"),
    ("model.num-classes", 17, "must be in [2, 16]"),
    ("train.batch-size", 0, "must be at least 1"),
    ("train.learning-rate", 0.0, "must be greater than 0"),
    ("train.local-epochs", 0, "must be at least 1"),
    ("train.max-physical-batch", 0, "must be at least 1"),
    ("privacy.accountant", "foo", "expected one of prv, rdp, gdp"),
    ("privacy.target-epsilon", 0.0, "must be greater than 0"),
    ("privacy.delta", 1.0, "must be in (0, 1)"),
    ("privacy.max-grad-norm", -1.0, "must be greater than 0"),
    ("privacy.noise-multiplier", -0.5, "must be at least 0"),
    ("privacy.grad-sample-mode", "magic", "expected one of auto, hooks, ghost, ew, functorch"),
    ("federation.num-rounds", 0, "must be at least 1"),
    ("federation.num-sites", 0, "must be at least 1"),
    ("federation.fraction-train", 0.0, "must be in (0, 1]"),
    ("federation.fraction-evaluate", 1.5, "must be in (0, 1]"),
    ("federation.min-sites", 0, "must be at least 1"),
    ("federation.round-timeout", 0.0, "must be greater than 0"),
    ("secagg.num-shares", 0.0, "must be in (0, 1]"),
    ("secagg.reconstruction-threshold", 1.5, "must be in (0, 1]"),
    ("secagg.max-weight", 0.0, "must be greater than 0"),
    ("run.name", " ", "must not be empty"),
    ("run.seed", -1, "must be at least 0"),
    ("strategy.name", "nope", "expected one of fedavg, fedprox"),
    ("strategy.trim-beta", 0.5, "must be in [0, 0.5)"),
    ("strategy.ema-decay", 1.0, "must be in [0, 1)"),
    ("train.augment-views", -1, "must be at least 0"),
    ("train.augment-shift", -2, "must be at least 0"),
    ("strategy.proximal-mu", -0.1, "must be at least 0"),
    ("strategy.num-malicious", -1, "must be at least 0"),
    ("validation.norm-multiple", 0.0, "must be greater than 0"),
    ("validation.min-cosine", 1.5, "must be in [-1, 1]"),
    ("partition.kind", "zipf", "expected one of iid, dirichlet, quantity"),
    ("partition.alpha", 0.0, "must be greater than 0"),
    ("simulation.max-parallel", 0, "must be at least 1"),
    ("simulation.dropout", 1.0, "must be in [0, 1)"),
    ("eval.target-sensitivity", 1.0, "must be in [0, 1)"),
    ("eval.val-fraction", -0.1, "must be in [0, 1)"),
    ("eval.min-group-size", 0, "must be at least 1"),
    ("eval.flag-gap", 0.0, "must be in (0, 1]"),
    ("augment.generator", "gan", "expected one of none, cvae"),
    ("augment.minority-ratio", 0.0, "must be in (0, 1]"),
    ("augment.epochs", 0, "must be at least 1"),
    ("augment.batch-size", 0, "must be at least 1"),
    ("augment.learning-rate", 0.0, "must be greater than 0"),
    ("augment.epsilon-share", 1.0, "must be in (0, 1)"),
    # rules across sections
    ("federation.min-sites", 4, "must be at most federation.num-sites (3)"),
    ("model.num-classes", 3, "must equal the number of data.class-names (2: normal, opacity)"),
    ("run.resume", True, "needs run.run-dir"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_VALUES)
def test_bad_values_are_refused_in_one_line_naming_key_value_and_rule(key, value, allowed) -> None:
    with pytest.raises(ConfigError) as excinfo:
        MedfedConfig.from_flat({key: value})

    message = str(excinfo.value)
    assert message.startswith(f"config key '{key}' = {value!r}: ") and allowed in message
    assert "\n" not in message


def test_every_section_is_covered_by_the_bad_values_table() -> None:
    sections = {key.partition(".")[0] for key in MedfedConfig().to_flat()}
    assert {key.partition(".")[0] for key, _, _ in BAD_VALUES} == sections


def test_replace_and_direct_construction_are_checked_too() -> None:
    from common.config import TrainConfig

    with pytest.raises(ConfigError, match=r"^config key 'privacy\.accountant' = 'foo': expected"):
        MedfedConfig().replace(**{"privacy.accountant": "foo"})
    with pytest.raises(ConfigError, match=r"^config key 'train\.batch-size' = 0: must be at least"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"'train\.batch-size' = 'x': expects int"):
        TrainConfig(batch_size="x")  # type: ignore[arg-type]


def test_consistent_settings_across_sections_are_accepted() -> None:
    config = MedfedConfig().replace(
        **{
            "data.class-names": "a,b,c",
            "model.num-classes": 3,
            "federation.num-sites": 1,
            "federation.min-sites": 1,
            "run.resume": True,
            "run.run-dir": "/somewhere",
            "data.test-fraction": 0.0,
        }
    )

    assert config.model.num_classes == 3


# -- refused before any site is contacted ---------------------------------------------------
def test_cli_refuses_a_bad_setting_before_starting_anything(tmp_path, capsys) -> None:
    from medfed.cli import main

    runs = tmp_path / "runs"
    argv = ["simulate", "demo", "--set", "train.batch-size=0", "--runs-dir", str(runs)]

    code = main(argv)

    err = capsys.readouterr().err
    assert code == 2
    assert err == "medfed: error: config key 'train.batch-size' = 0: must be at least 1\n"
    assert not runs.exists()


def test_demo_refuses_bad_flags_before_starting_anything(tmp_path, capsys) -> None:
    from medfed.cli import main

    runs = tmp_path / "runs"

    code = main(["demo", "--epsilon", "0", "--runs-dir", str(runs)])

    err = capsys.readouterr().err
    assert code == 2
    assert (
        err == "medfed: error: config key 'privacy.target-epsilon' = 0.0: must be greater than 0\n"
    )
    assert not runs.exists()


class _NoGrid:
    """A Grid stand-in that records (and refuses) every use."""

    def __init__(self) -> None:
        self.used: list[str] = []

    def __getattr__(self, name: str):
        self.used.append(name)
        raise AssertionError(f"the ServerApp used grid.{name} before checking its settings")


def test_server_app_refuses_a_bad_run_config_before_using_the_grid(tmp_path) -> None:
    from flwr.app import Context, RecordDict

    from server.app import build_server_app

    run_config = {**MedfedConfig().to_flat(), "privacy.accountant": "foo"}
    run_config["run.runs-dir"] = str(tmp_path / "runs")
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    grid = _NoGrid()

    with pytest.raises(ConfigError, match=r"config key 'privacy\.accountant' = 'foo'"):
        build_server_app()(grid, context)  # type: ignore[arg-type]

    assert grid.used == []
    assert not (tmp_path / "runs").exists()


# -- one source of defaults: the dataclasses ------------------------------------------------
def test_demo_flags_default_to_the_demo_scenario_and_show_it() -> None:
    from medfed.cli import build_parser
    from medfed.commands.demo import demo_config
    from simulations.scenario import load_scenario

    parser = build_parser()
    args = parser.parse_args(["demo"])
    defaults = load_scenario("demo").config()

    assert (args.sites, args.rounds, args.epsilon, args.seed) == (
        defaults.federation.num_sites,
        defaults.federation.num_rounds,
        defaults.privacy.target_epsilon,
        defaults.run.seed,
    )
    assert (args.images_per_site, args.runs_dir, args.synthetic_root) == (
        defaults.data.synthetic_images_per_site,
        defaults.run.runs_dir,
        defaults.data.synthetic_root,
    )
    demo = demo_config(args).replace(**{"data.synthetic-root": defaults.data.synthetic_root})
    assert demo == defaults  # `medfed demo` without flags runs the demo scenario
    demo_help = parser._subparsers._group_actions[0].choices["demo"].format_help()  # type: ignore[union-attr]
    assert f"(default {defaults.privacy.target_epsilon})" in demo_help
