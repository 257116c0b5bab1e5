"""Robust aggregation under attack: test accuracy / AUC per strategy, clean vs one hostile site.

Five IID hospitals cut from the PneumoniaMNIST train split train with the real ClientApp
handler (no DP, so the comparison isolates the aggregation rule); hospital-c's update is
sign-flipped or scaled x1000 every round. Update validation is switched off, so only the
strategy stands between the attacker and the model. The global model is scored on the
official PneumoniaMNIST test split. Rounds are driven in process through Flower's strategy
objects (``configure_train`` / ``aggregate_train``), without the simulation engine.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/robustness.py --rounds 8
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from client.app import handle_train  # noqa: E402
from client.evaluate import evaluate_model  # noqa: E402
from client.site import SiteSources  # noqa: E402
from common import keys  # noqa: E402
from common.config import DataConfig, MedfedConfig  # noqa: E402
from common.data.medmnist import load_npz_rows, read_npz_labels  # noqa: E402
from common.models import build_model  # noqa: E402
from common.params import arrays_to_model, model_to_arrays  # noqa: E402
from common.round_settings import encode_round_settings  # noqa: E402
from medfed.testing.faults import corrupt  # noqa: E402
from server.recorder import RoundRecorder  # noqa: E402
from server.strategies import build_strategy  # noqa: E402
from simulations.scenario import DEFAULT_DATA_ROOT  # noqa: E402
from simulations.sites import PartitionedPool  # noqa: E402

NODES = [100, 101, 102, 103, 104]
ATTACKER = 2


class _Grid:
    def get_node_ids(self) -> list[int]:
        return list(NODES)


def _reply(content: RecordDict, instruction: Message) -> Message:
    return Message(content, reply_to=instruction)


def run(config: MedfedConfig, attack: str | None, rounds: int, test) -> tuple[float, float]:
    strategy = build_strategy(config, RoundRecorder(listener=lambda record, arrays: None))
    torch.manual_seed(config.run.seed)
    arrays = model_to_arrays(build_model(config.model, config.data.channels))
    sources = SiteSources.create(partitions=PartitionedPool())
    states = {node: RecordDict() for node in NODES}
    for server_round in range(1, rounds + 1):
        sent = strategy.configure_train(
            server_round, arrays, ConfigRecord(encode_round_settings(config, "robustness")), _Grid()
        )
        replies = []
        for message in sorted(sent, key=lambda m: m.metadata.dst_node_id):
            node = message.metadata.dst_node_id
            site = NODES.index(node)
            context = Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": site},
                state=states[node],
                run_config={},
            )
            content = handle_train(message.content, context, sources)
            if attack is not None and site == ATTACKER:
                content[keys.ARRAYS] = corrupt(
                    content.array_records[keys.ARRAYS],
                    message.content.array_records[keys.ARRAYS],
                    attack,
                )
            replies.append(_reply(content, message))
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        arrays = aggregated if aggregated is not None else arrays
    if not all(np.isfinite(a.numpy()).all() for a in arrays.values()):
        return float("nan"), float("nan")  # the attacker made the global model diverge
    model = build_model(config.model, config.data.channels)
    arrays_to_model(arrays, model)
    try:
        scores = evaluate_model(model, *test)
    except ValueError:  # finite but huge weights: scores overflow to NaN
        return float("nan"), float("nan")
    return scores.accuracy, scores.auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum"],
    )
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "robustness.json"
    )
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    logging.getLogger("medfed").setLevel(logging.ERROR)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    pool = args.data_root / "medmnist" / "pneumoniamnist.npz"
    rows = np.arange(len(read_npz_labels(pool, "test", "test")))
    held_out = load_npz_rows(
        pool, DataConfig(image_size=28), "test", split="test", train_rows=rows, test_rows=rows[:0]
    )
    test = (held_out.train_x, held_out.train_y)
    torch.set_num_threads(1)
    results = []
    for name in args.strategies:
        config = MedfedConfig().replace(
            **{
                "partition.pool": str(pool),
                "partition.kind": "iid",
                "federation.num-sites": 5,
                "federation.min-sites": 3,
                "strategy.name": name,
                "validation.enabled": False,
                "privacy.enabled": False,
                "data.image-size": 28,
                "train.learning-rate": 0.05,
                "train.momentum": 0.9,
                "train.batch-size": 32,
            }
        )
        for attack in (None, "flip", "scale"):
            started = time.monotonic()
            accuracy, auc = run(config, attack, args.rounds, test)
            row = {
                "strategy": name,
                "attack": attack or "none",
                "accuracy": accuracy,
                "auc": auc,
                "seconds": time.monotonic() - started,
            }
            results.append(row)
            print(
                f"{name:14s} {row['attack']:6s} acc {accuracy:.3f}  auc {auc:.3f}  "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"command": " ".join(sys.argv), "rounds": args.rounds, "results": results}, indent=2
        )
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
