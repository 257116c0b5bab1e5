"""On-site generative augmentation (client.augment): trained on the site's training split only,
never sent, and under DP booked in the site's ledger within the run's target."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from flwr.app import Message
from opacus.grad_sample import AbstractGradSampleModule

import client.augment as augment_module
from client.augment import GENERATOR_DIR, GeneratorPlan, top_up, train_generator
from client.site import SiteSources
from common import keys
from common.config import AugmentConfig, MedfedConfig, PrivacyConfig
from common.errors import ConfigError
from common.ledger import GENERATOR_ROUND, check_epsilons, read_ledger, run_spends
from common.models import build_model
from tests.clientapp_harness import CapturingHarness

AUGMENT = {"augment.generator": "cvae", "augment.epochs": 2, "augment.minority-ratio": 1.0}


@pytest.fixture
def config(small_config: MedfedConfig) -> MedfedConfig:
    # RDP: the same composition, calibrated in a fraction of PRV's time
    return small_config.replace(**AUGMENT, **{"privacy.accountant": "rdp"})


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every (images, labels) the generator is trained on."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = augment_module.train_generator

    def recording(images, labels, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((images.clone(), labels.clone()))
        return real(images, labels, *args, **kwargs)

    monkeypatch.setattr(augment_module, "train_generator", recording)
    return calls


def _site_data(harness: CapturingHarness):  # type: ignore[no-untyped-def]
    return SiteSources.create().load(harness.context.node_config, harness.config)[1]


def _ledger(harness: CapturingHarness):  # type: ignore[no-untyped-def]
    return [r for r in read_ledger(Path(str(harness.state_dir)) / "privacy-ledger.jsonl") if r]


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"augment.generator": "gan"}, "augment.generator"),
        ({"augment.minority-ratio": 0.0}, "augment.minority-ratio"),
        ({"augment.minority-ratio": 1.5}, "augment.minority-ratio"),
        ({"augment.epochs": 0}, "augment.epochs"),
        ({"augment.epsilon-share": 1.0}, "augment.epsilon-share"),
        ({**AUGMENT, "privacy.accountant": "gdp"}, "privacy.accountant"),
        ({**AUGMENT, "data.frames": "stack", "model.name": "seq-gru"}, "augment.generator"),
        (
            {**AUGMENT, "model.name": "fusion-cnn", "data.clinical-columns": "age,sex"},
            "augment.generator",
        ),
    ],
)
def test_bad_augment_settings_are_refused_naming_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'") as refused:
        MedfedConfig.from_flat(overrides)

    assert "\n" not in str(refused.value)


def test_augmentation_is_off_by_default_and_travels_to_the_sites() -> None:
    from common.round_settings import decode_round_settings, encode_round_settings

    config = MedfedConfig().replace(**AUGMENT)

    assert MedfedConfig().augment.generator == "none"
    assert decode_round_settings(encode_round_settings(config, "r")).config.augment == (
        config.augment
    )


# --- the generator ----------------------------------------------------------------------


def test_top_up_brings_smaller_classes_to_the_ratio_and_skips_absent_ones() -> None:
    labels = torch.tensor([0] * 30 + [1] * 6)

    assert top_up(labels, 3, 1.0) == {1: 24}
    assert top_up(labels, 2, 0.5) == {1: 9}
    assert top_up(labels, 2, 0.1) == {}


def test_samples_have_the_image_shape_range_and_class() -> None:
    images = torch.rand(24, 1, 16, 16)
    labels = torch.tensor([0, 1] * 12)
    plan = GeneratorPlan(batch_size=8, sample_rate=1 / 3, steps=6, noise_multiplier=0.0)

    model, entry = train_generator(
        images, labels, 2, AugmentConfig(epochs=2), PrivacyConfig(enabled=False), plan
    )
    wanted = torch.tensor([1, 1, 1, 0])
    samples = model.sample(wanted, generator=torch.Generator().manual_seed(0))

    assert entry is None
    assert samples.shape == (4, 1, 16, 16)
    assert samples.dtype == images.dtype
    assert float(samples.min()) >= 0.0 and float(samples.max()) <= 1.0
    assert not torch.equal(samples[0], samples[1])  # drawn, not one fixed image


def test_a_dp_generator_leaves_no_opacus_module_alive() -> None:
    """Opacus' wrapper and its hooks formed reference cycles that outlived training until
    Python's rare full collection; training unhooks them, so reference counting frees them."""
    images = torch.rand(24, 1, 16, 16)
    labels = torch.tensor([0, 1] * 12)
    plan = GeneratorPlan(batch_size=8, sample_rate=1 / 3, steps=3, noise_multiplier=1.0)
    gc.collect()
    gc.disable()  # reference counting alone must free them
    try:
        _, entry = train_generator(
            images, labels, 2, AugmentConfig(epochs=1), PrivacyConfig(accountant="rdp"), plan
        )
        alive = [o for o in gc.get_objects() if isinstance(o, AbstractGradSampleModule)]
    finally:
        gc.enable()
    assert entry is not None and entry[0] == 1.0
    assert alive == []


def test_generator_trains_on_the_training_split_only(
    small_site: Path, config: MedfedConfig, spy: list
) -> None:
    harness = CapturingHarness(
        small_site,
        config.replace(**{"privacy.enabled": False}),
        node_extras={keys.NODE_REQUIRE_DP: "false"},
    )
    data = _site_data(harness)

    harness.train(1)

    [(images, labels)] = spy
    assert torch.equal(images, data.train_x) and torch.equal(labels, data.train_y)
    held_out = torch.cat([data.val_x, data.test_x]).flatten(1)
    assert len(held_out) > 0
    # no validation or test image is among the generator's inputs
    assert torch.cdist(images.flatten(1), held_out).min() > 0


def test_reply_holds_nothing_about_the_generator(
    small_site: Path, config: MedfedConfig, tmp_path: Path
) -> None:
    without_augment = config.replace(**{"augment.generator": "none"})
    plain = CapturingHarness(small_site, without_augment, state_dir=tmp_path / "plain")
    augmented = CapturingHarness(small_site, config, state_dir=tmp_path / "augmented")
    real_train = len(_site_data(augmented).train_y)

    without, with_ = plain.train(1), augmented.train(1)

    assert set(with_.content.keys()) == set(without.content.keys())
    classifier = set(build_model(config.model, 1).state_dict())
    assert set(with_.content[keys.ARRAYS].keys()) == classifier
    metrics = with_.content[keys.METRICS]
    assert set(metrics.keys()) == set(without.content[keys.METRICS].keys())
    assert set(metrics.keys()) <= keys.TRAIN_METRICS_ALLOWED
    assert metrics[keys.NUM_EXAMPLES] == real_train  # generated images are not counted
    attestation = with_.content[keys.ATTESTATION]
    assert attestation["round"] == 1  # the generator's own record stays at the site
    assert set(attestation.keys()) == set(without.content[keys.ATTESTATION].keys())
    assert (Path(str(augmented.state_dir)) / GENERATOR_DIR).is_dir()  # it exists, at the site


def test_under_dp_the_ledger_books_the_generator_once_within_the_target(
    small_site: Path, config: MedfedConfig, spy: list
) -> None:
    harness = CapturingHarness(small_site, config)
    rounds = config.federation.num_rounds

    replies: list[Message] = [harness.train(r) for r in range(1, rounds + 1)]

    assert len(spy) == 1  # trained once; later rounds reuse it from the state directory
    records = _ledger(harness)
    assert [r.round for r in records] == [GENERATOR_ROUND, *range(1, rounds + 1)]
    generator = records[0]
    assert generator.noise_multiplier > 0 and generator.steps > 0
    assert check_epsilons(records) == []  # epsilon recomputed with the generator composed
    spend = run_spends(records)[str(harness.run_id)]
    assert spend.rounds == rounds
    final = float(replies[-1].content[keys.METRICS][keys.EPSILON])
    assert final == pytest.approx(records[-1].epsilon)
    assert generator.epsilon < final <= config.privacy.target_epsilon


def test_a_site_budget_too_small_for_generator_and_round_declines_before_training_it(
    small_site: Path, config: MedfedConfig, spy: list
) -> None:
    harness = CapturingHarness(
        small_site, config, node_extras={keys.NODE_EPSILON_BUDGET: 0.5 * 8.0}
    )

    reply = harness.train(1)

    assert reply.content[keys.METRICS][keys.TRAIN_STATUS] == keys.STATUS_DECLINED_BUDGET
    assert spy == [] and _ledger(harness) == []


def test_a_lost_generator_is_not_retrained_under_dp(
    small_site: Path, config: MedfedConfig, spy: list
) -> None:
    harness = CapturingHarness(small_site, config)
    harness.train(1)
    for saved in (Path(str(harness.state_dir)) / GENERATOR_DIR).iterdir():
        saved.unlink()

    reply = harness.train(2)

    assert reply.content[keys.METRICS][keys.TRAIN_STATUS] == keys.STATUS_TRAINED
    assert len(spy) == 1  # no second spend
    assert [r.round for r in _ledger(harness)].count(GENERATOR_ROUND) == 1


def test_the_augment_scenario_has_a_small_imbalanced_site() -> None:
    from simulations.scenario import load_scenario
    from simulations.sites import site_splits
    from tests._fed_helpers import DATA_ROOT

    config = load_scenario("augment-imbalanced", DATA_ROOT).config()
    labels, splits = site_splits(config)
    smallest = min(splits, key=lambda split: len(split.train))
    counts = torch.bincount(torch.from_numpy(labels[smallest.train]), minlength=2)

    assert config.augment.generator == "cvae" and config.privacy.enabled
    assert len(smallest.train) < 200
    assert int(counts.min()) / int(counts.sum()) < 0.25
