"""On-site generative augmentation: minority-class sensitivity of a small, imbalanced site
with and without its generator, and the total epsilon each spends.

The site is the smallest hospital of the ``augment-imbalanced`` scenario (PneumoniaMNIST,
Dirichlet(1.0) cut of 900 pool images: 149 training images, 30 with pneumonia; its smaller
class is "pneumonia"). It trains alone through the real ClientApp handler
(``client.app.handle_train``: planning, budget check, generator training and booking, Opacus
DP-SGD, ledger), round after round on its own previous model (one site: the server step is
the identity), with the scenario's recipe. Each condition is run with the same seeds
(``run.seed`` = 0, 1, 2...: the same initial model, validation carve and batches).

After the last round the operating threshold is chosen on the site's own validation split
(Youden's J, as ``server.evaluation`` does on pooled validation counts), then the
minority-class sensitivity (and specificity, AUC) is measured on the site's held-out test
split and, because that split holds only ~10 minority images, also on PneumoniaMNIST's
official test split (624 images). Epsilon is the run's total at the site as its signed
ledger records it (generator included), with the generator's own share.

Usage (the figures in BENCHMARKS.md; RDP instead of the default PRV accountant only because
its calibration is much faster on the shared 2-core machine):
    PYTHONPATH=. .venv/bin/python benchmarks/augment.py --seeds 0 1 2 --rounds 30 --dp both \
        --set privacy.accountant=rdp --out augment.json
Options: --rounds N  --dp on|off|both  --set KEY=VALUE  --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from client.app import handle_train
from client.evaluate import predict_scores
from client.site import SiteSources
from common import keys
from common.config import MedfedConfig
from common.data.medmnist import load_npz_rows
from common.ledger import GENERATOR_ROUND, read_ledger
from common.models import build_model
from common.params import arrays_to_model, model_to_arrays
from common.privacy import epsilon_of
from common.roc import Curve, choose_threshold, curve_counts
from common.round_settings import encode_round_settings
from simulations.scenario import load_scenario
from simulations.sites import PartitionedPool, site_splits

SCENARIO = "augment-imbalanced"


@dataclass(frozen=True)
class Outcome:
    """One condition, one seed."""

    augment: bool
    dp: bool
    seed: int
    site_test_sensitivity: float  # minority class, at the validation-chosen threshold
    site_test_specificity: float
    official_test_sensitivity: float
    official_test_specificity: float
    official_test_auc: float
    threshold: float
    epsilon: float | None  # the run's total at the site (ledger), generator included
    generator_epsilon: float | None
    seconds: float


def _smallest_site(config: MedfedConfig) -> tuple[int, int]:
    """Index of the site with the fewest training images, and its smaller class."""
    labels, splits = site_splits(config)
    index = min(range(len(splits)), key=lambda i: len(splits[i].train))
    counts = np.bincount(labels[splits[index].train], minlength=config.model.num_classes)
    return index, int(np.argmin(counts))


def _at(curve: Curve, index: int) -> tuple[float, float]:
    return float(curve.sensitivity()[index]), float(curve.specificity()[index])


def run_condition(
    base: MedfedConfig, site: int, minority: int, *, augment: bool, dp: bool, seed: int
) -> Outcome:
    """Train the site alone for the configured rounds and measure its model."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medfed-augment-") as state:
        config = base.replace(
            **{
                "augment.generator": "cvae" if augment else "none",
                "privacy.enabled": dp,
                "run.seed": seed,
            }
        )
        node = {
            keys.NODE_PARTITION_ID: site,
            keys.NODE_STATE_DIR: state,
            keys.NODE_REQUIRE_DP: str(dp).lower(),
        }
        context = Context(
            run_id=1, node_id=site, node_config=node, state=RecordDict(), run_config={}
        )
        sources = SiteSources.create(partitions=PartitionedPool())
        torch.manual_seed(seed)
        arrays = model_to_arrays(build_model(config.model, config.data.channels))
        for server_round in range(1, config.federation.num_rounds + 1):
            settings = {**encode_round_settings(config, "bench"), keys.SERVER_ROUND: server_round}
            content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: ConfigRecord(settings)})
            reply = handle_train(content, context, sources)
            status = reply[keys.METRICS][keys.TRAIN_STATUS]  # type: ignore[index]
            if status != keys.STATUS_TRAINED:
                raise SystemExit(f"round {server_round}: the site declined (status {status})")
            arrays = reply[keys.ARRAYS]  # type: ignore[assignment]
        model = build_model(config.model, config.data.channels)
        arrays_to_model(arrays, model)  # type: ignore[arg-type]
        _, data = sources.load(node, config)
        epsilon, generator_epsilon = _ledger_epsilons(Path(state), config) if dp else (None, None)

    def curve(images: torch.Tensor, labels: torch.Tensor) -> Curve:
        probabilities, _ = predict_scores(model, images)
        return curve_counts(labels.numpy() == minority, probabilities[:, minority])

    point = choose_threshold(curve(data.val_x, data.val_y), config.eval.target_sensitivity)
    official = load_npz_rows(
        Path(config.partition.pool),
        config.data,
        "official-test",
        split="test",
        train_rows=np.arange(len(np.load(config.partition.pool)["test_labels"])),
        test_rows=np.arange(0),
    )
    official_curve = curve(official.train_x, official.train_y)
    site_sens, site_spec = _at(curve(data.test_x, data.test_y), point.index)
    off_sens, off_spec = _at(official_curve, point.index)
    return Outcome(
        augment=augment,
        dp=dp,
        seed=seed,
        site_test_sensitivity=site_sens,
        site_test_specificity=site_spec,
        official_test_sensitivity=off_sens,
        official_test_specificity=off_spec,
        official_test_auc=official_curve.auc,
        threshold=point.threshold,
        epsilon=epsilon,
        generator_epsilon=generator_epsilon,
        seconds=time.perf_counter() - started,
    )


def _ledger_epsilons(state: Path, config: MedfedConfig) -> tuple[float, float | None]:
    """The run's final epsilon at the site and the generator's alone (ledger records)."""
    records = [r for r in read_ledger(state / "privacy-ledger.jsonl") if r is not None]
    generator = [r for r in records if r.round == GENERATOR_ROUND]
    alone = None
    if generator:
        alone = epsilon_of(
            [generator[0].history_entry()],
            delta=config.privacy.delta,
            accountant=config.privacy.accountant,
        )
    return records[-1].epsilon, alone


def _mean(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return f"{present[0]:.3f}"
    return f"{statistics.mean(present):.3f} ± {statistics.stdev(present):.3f}"


def table(outcomes: list[Outcome]) -> str:
    """Markdown: one row per condition, mean ± sd over seeds."""
    lines = [
        "| DP | augmentation | minority sens. (site test) | minority sens. (official test) "
        "| spec. (official test) | AUC (official test) | total ε (generator ε) | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    conditions = sorted({(o.dp, o.augment) for o in outcomes}, reverse=True)
    for dp, augment in conditions:
        rows = [o for o in outcomes if (o.dp, o.augment) == (dp, augment)]
        epsilon = _mean([o.epsilon for o in rows])
        generator = _mean([o.generator_epsilon for o in rows])
        spent = "-" if epsilon == "-" else f"{epsilon} ({generator})"
        lines.append(
            f"| {'ε=8' if dp else 'off'} | {'cvae' if augment else 'none'} "
            f"| {_mean([o.site_test_sensitivity for o in rows])} "
            f"| {_mean([o.official_test_sensitivity for o in rows])} "
            f"| {_mean([o.official_test_specificity for o in rows])} "
            f"| {_mean([o.official_test_auc for o in rows])} | {spent} "
            f"| {statistics.mean(o.seconds for o in rows):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=0, help="0: the scenario's")
    parser.add_argument(
        "--dp", choices=("on", "off", "both"), default="on", help="runs with / without DP"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("medfed.client").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    overrides: dict[str, object] = {"train.threads": args.threads}
    if args.rounds:
        overrides["federation.num-rounds"] = args.rounds
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = value
    base = load_scenario(SCENARIO).config(overrides)
    site, minority = _smallest_site(base)
    print(f"site {site}, minority class {minority}, {base.federation.num_rounds} rounds")
    outcomes = []
    for dp in {"on": [True], "off": [False], "both": [True, False]}[args.dp]:
        for augment in (False, True):
            for seed in args.seeds:
                outcome = run_condition(base, site, minority, augment=augment, dp=dp, seed=seed)
                print(json.dumps(asdict(outcome)), flush=True)
                outcomes.append(outcome)
    print(table(outcomes))
    if args.out:
        args.out.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))


if __name__ == "__main__":
    main()
