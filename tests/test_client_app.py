"""The ClientApp's train/evaluate handlers: DP is really applied, epsilon accumulates."""

from __future__ import annotations

import fcntl
import gc
import math
from pathlib import Path

import pytest
import torch
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import AbstractGradSampleModule
from opacus.optimizers import DPOptimizer
from torch.utils.data import TensorDataset

import client.app
from client.privacy_state import ROUND_LOCK_FILE
from client.train import plan_round, prepare_training
from common import keys
from common.config import MedfedConfig
from common.data.synthetic import generate_site
from common.models import build_model
from common.privacy import epsilon_of
from tests.clientapp_harness import CapturingHarness
from tests.conftest import SMALL_IMAGES, SMALL_PX


def _dataset(n: int = 40) -> TensorDataset:
    return TensorDataset(torch.randn(n, 1, 32, 32), torch.randint(0, 2, (n,)))


def test_dp_training_uses_opacus_optimizer_with_noise(small_config: MedfedConfig) -> None:
    model = build_model(small_config.model, 1)
    plan = plan_round(40, small_config.train, small_config.privacy, planned_rounds=2)

    prepared = prepare_training(
        model, _dataset(), small_config.train, small_config.privacy, plan=plan
    )

    assert isinstance(prepared.optimizer, DPOptimizer)
    assert isinstance(prepared.loader, DPDataLoader)
    assert prepared.optimizer.noise_multiplier > 0
    assert prepared.optimizer.max_grad_norm == small_config.privacy.max_grad_norm
    assert prepared.engine is not None


def test_without_dp_training_is_plain_sgd(small_config: MedfedConfig) -> None:
    config = small_config.replace(**{"privacy.enabled": False})
    model = build_model(config.model, 1)
    plan = plan_round(40, config.train, config.privacy, planned_rounds=2)

    prepared = prepare_training(model, _dataset(), config.train, config.privacy, plan=plan)

    assert not isinstance(prepared.optimizer, DPOptimizer)
    assert prepared.engine is None


def test_epsilon_accumulates_across_rounds_and_reaches_the_target(
    small_site: Path, small_config: MedfedConfig
) -> None:
    harness = CapturingHarness(small_site, small_config)

    eps = [
        float(harness.train(r).content[keys.METRICS][keys.EPSILON])
        for r in range(1, small_config.federation.num_rounds + 1)
    ]

    assert 0 < eps[0] < eps[1]
    assert all(math.isfinite(e) for e in eps)
    # The noise was calibrated so the planned rounds spend the target (PRV is approximate).
    assert eps[-1] == pytest.approx(small_config.privacy.target_epsilon, rel=0.05)


def test_epsilon_after_k_rounds_equals_accountant_from_scratch(
    small_site: Path, small_config: MedfedConfig
) -> None:
    harness = CapturingHarness(small_site, small_config)
    first = harness.train(1).content[keys.METRICS]
    second = harness.train(2).content[keys.METRICS]
    noise = float(first[keys.NOISE_MULTIPLIER])
    rate = float(first[keys.SAMPLE_RATE])
    steps_per_round = round(1 / rate) * small_config.train.local_epochs

    from_scratch = epsilon_of(
        [(noise, rate, 2 * steps_per_round)],
        delta=small_config.privacy.delta,
        accountant=small_config.privacy.accountant,
    )

    assert float(second[keys.EPSILON]) == pytest.approx(from_scratch, rel=1e-6)


def test_dp_disabled_reports_no_epsilon(small_site: Path, small_config: MedfedConfig) -> None:
    config = small_config.replace(**{"privacy.enabled": False})

    harness = CapturingHarness(small_site, config, node_extras={keys.NODE_REQUIRE_DP: "false"})

    metrics = harness.train().content[keys.METRICS]

    assert keys.EPSILON not in metrics
    assert metrics[keys.NUM_EXAMPLES] > 0


def test_evaluate_reports_auc_between_zero_and_one(
    small_site: Path, small_config: MedfedConfig
) -> None:
    metrics = CapturingHarness(small_site, small_config).evaluate().content[keys.METRICS]

    assert 0.0 <= float(metrics[keys.EVAL_AUC]) <= 1.0
    counts = sum(
        int(metrics[k]) for k in (keys.TRUE_POS, keys.FALSE_POS, keys.TRUE_NEG, keys.FALSE_NEG)
    )
    assert counts == metrics[keys.NUM_EXAMPLES]


@pytest.mark.parametrize("empty", ["test", "val"])
def test_a_site_without_a_held_out_split_is_evaluated_with_zero_examples(
    small_site: Path, small_config: MedfedConfig, tmp_path: Path, empty: str
) -> None:
    # An empty val split (eval.val-fraction = 0) or test split (a hospital that holds no
    # images out, or a tiny site among 1,000 simulated ones) used to fail the evaluate
    # handler with scikit-learn's "Found empty input array".
    config, site = small_config, small_site
    if empty == "val":
        config = small_config.replace(**{"eval.val-fraction": 0.0})
    else:
        site = generate_site(
            tmp_path / "no-test",
            0,
            seed=0,
            num_images=SMALL_IMAGES,
            image_size=SMALL_PX,
            test_fraction=0.0,
        )

    metrics = CapturingHarness(site, config).evaluate().content[keys.METRICS]

    assert metrics[keys.NUM_EXAMPLES] == (0 if empty == "test" else 12)
    counts = sum(
        int(metrics[k]) for k in (keys.TRUE_POS, keys.FALSE_POS, keys.TRUE_NEG, keys.FALSE_NEG)
    )
    assert counts == metrics[keys.NUM_EXAMPLES]


def test_a_round_trains_and_books_its_spend_under_the_sites_round_lock(
    small_site: Path, small_config: MedfedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run's round at the site could not take the lock while this one trains, so it
    checks its budget only after this round's spend is in the ledger."""
    harness = CapturingHarness(small_site, small_config)
    real_train, real_lock = client.app.train_locally, client.app.one_round_at_a_time
    held: list[bool] = []
    locks: list[Path] = []

    def lock_and_remember(directory: Path):  # type: ignore[no-untyped-def]
        locks.append(directory / ROUND_LOCK_FILE)
        return real_lock(directory)

    def train_while_probing_the_lock(*args, **kwargs):  # type: ignore[no-untyped-def]
        with open(locks[-1], "a") as other_process:  # a second open file: flock sees another owner
            try:
                fcntl.flock(other_process.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(True)
            else:
                held.append(False)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(client.app, "train_locally", train_while_probing_the_lock)
    monkeypatch.setattr(client.app, "one_round_at_a_time", lock_and_remember)
    reply = harness.train(1)

    assert held == [True]
    assert float(reply.content[keys.METRICS][keys.EPSILON]) > 0
    # released afterwards: the next round (or another run) can take it
    with open(locks[-1], "a") as after:
        fcntl.flock(after.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_dp_round_leaves_no_opacus_module_alive_for_the_next_message(
    small_site: Path, small_config: MedfedConfig
) -> None:
    """The round's GradSampleModule and its hooks formed reference cycles that waited for
    Python's rare full collection (a site's process grew ~29 MiB a round); training now
    unhooks Opacus, so reference counting frees them before the reply."""
    harness = CapturingHarness(small_site, small_config)
    gc.collect()
    gc.disable()  # reference counting alone must free them
    try:
        harness.train()
        alive = [o for o in gc.get_objects() if isinstance(o, AbstractGradSampleModule)]
    finally:
        gc.enable()
    assert alive == []
