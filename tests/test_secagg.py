"""SecAgg+ (Flower's legacy workflow): the strategy only ever receives the aggregate.

A real two-site federation in Flower's simulation engine with DP-SGD at each site: one
mod inside ``secaggplus_mod`` records each site's update before masking, one outside it
records what the site sends, and the server strategy's ``aggregate_fit`` input is recorded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation
from rich.console import Console

from client.app import handle_evaluate, handle_train
from client.outbound import AuditTo, read_audit
from client.privacy_state import PrivacyLedgerStore
from client.secagg import SiteClient, SiteHandlers, build_secagg_client_app
from common import keys
from common.config import MedfedConfig
from common.data.synthetic import ensure_synthetic_site
from common.errors import ConfigError
from common.models import build_model
from common.round_settings import encode_round_settings
from server.app import run_federation
from server.checkpoint import CHECKPOINT_DIR, load_latest
from server.rundir import METRICS_FILE, RunDirectory
from server.secagg import FitResults, SecAggEngine


def _config(tmp_path: Path) -> MedfedConfig:
    return MedfedConfig().replace(
        **{
            "data.image-size": 32,
            "data.synthetic-root": str(tmp_path / "synthetic"),
            "data.synthetic-images-per-site": 32,
            "data.synthetic-image-size": 64,
            "federation.num-rounds": 2,
            "federation.num-sites": 2,
            "privacy.accountant": "rdp",
            # explicit noise, generous run cap: a resumed round counted twice is not declined
            "privacy.noise-multiplier": 1.0,
            "privacy.target-epsilon": 50.0,
            "run.run-dir": str(tmp_path / "run"),
            "train.batch-size": 8,
            "secagg.enabled": True,
            "validation.enabled": False,
        }
    )


def _unmasked_updates(folder: Path) -> dict[str, list[list[np.ndarray]]]:
    """Each site's update before masking, by round (legacy FitRes parameters)."""
    by_round: dict[str, list[list[np.ndarray]]] = {}
    for _, message in read_audit(folder):
        if message.metadata.message_type != "train" or message.has_error():
            continue
        arrays = next(iter(message.content.array_records.values())).to_numpy_ndarrays()
        by_round.setdefault(message.metadata.group_id, []).append(arrays)
    return by_round


def _run_secagg(config: MedfedConfig, tmp_path: Path, received: dict[int, FitResults]) -> None:
    """A 2-site SecAgg+ federation in Flower's simulation engine, audited at both sides."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(
            grid,
            context,
            config,
            Console(quiet=True),
            engine=SecAggEngine(
                inspect_fit=lambda rnd, results: received.__setitem__(rnd, list(results))
            ),
        )

    client_app = build_secagg_client_app(
        SiteHandlers(train=handle_train, evaluate=handle_evaluate),
        outer_mods=[AuditTo(tmp_path / "sent")],
        inner_mods=[AuditTo(tmp_path / "unmasked")],
    )
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=2,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"logging_level": logging.ERROR, "log_to_driver": False},
        },
    )


def _booked_runs(config: MedfedConfig) -> dict[str, list[str]]:
    """Run keys in each simulated site's privacy state (its default state directory)."""
    root = Path(config.data.synthetic_root) / ".privacy"
    return {site.name: sorted(PrivacyLedgerStore(site).load()) for site in sorted(root.iterdir())}


@pytest.mark.slow
def test_strategy_receives_only_the_secure_aggregate(tmp_path: Path) -> None:
    # Prepare
    config = _config(tmp_path)
    for index in range(2):
        ensure_synthetic_site(
            Path(config.data.synthetic_root), index, seed=0, num_images=32, image_size=64
        )
    received: dict[int, FitResults] = {}

    # Execute
    _run_secagg(config, tmp_path, received)

    # Assert: two rounds recorded in the run directory
    lines = (tmp_path / "run" / METRICS_FILE).read_text().splitlines()
    assert len(lines) == 2
    unmasked = _unmasked_updates(tmp_path / "unmasked")
    assert sorted(received) == [1, 2]
    for server_round, results in received.items():
        sites = unmasked[str(server_round)]
        assert len(results) == len(sites) == 2
        given = [parameters_to_ndarrays(fit.parameters) for _, fit in results]
        weights = [fit.num_examples for _, fit in results]
        # every result the strategy got carries the same arrays: the aggregate
        for other in given[1:]:
            assert all(np.array_equal(a, b) for a, b in zip(given[0], other, strict=True))
        aggregate = np.concatenate([a.ravel() for a in given[0]])
        flat = [np.concatenate([a.ravel() for a in site]) for site in sites]
        for update in flat:  # ... and never one site's own update
            assert np.max(np.abs(aggregate - update)) > 1e-2
        # it is the example-weighted mean of the unmasked updates (up to quantisation);
        # the order of sites is unknown to the test, so accept either weight assignment
        means = [(w0 * flat[0] + w1 * flat[1]) / (w0 + w1) for w0, w1 in (weights, weights[::-1])]
        assert min(np.max(np.abs(aggregate - m)) for m in means) < 5e-3

    # Assert: what the sites sent holds no unmasked parameter array
    raw_arrays = [a for sites in unmasked.values() for site in sites for a in site]
    compared = 0
    for _, message in read_audit(tmp_path / "sent"):
        if message.has_error() or message.metadata.message_type != "train":
            continue
        for record in message.content.values():
            if isinstance(record, ArrayRecord):
                assert len(record) == 0  # secaggplus_mod empties the plain parameters
            if not isinstance(record, ConfigRecord):
                continue
            for value in record.values():
                for blob in value if isinstance(value, list) else [value]:
                    if not isinstance(blob, bytes) or not blob.startswith(b"\x93NUMPY"):
                        continue
                    sent = bytes_to_ndarray(blob).astype(np.float64)
                    for raw in raw_arrays:
                        if raw.shape == sent.shape:
                            compared += 1
                            assert not np.allclose(sent, raw, atol=1e-3)
    # 2 sites x 2 rounds sent one masked vector per parameter array; all were compared
    assert compared >= 4 * len(unmasked["1"][0])

    # Assert: the same lifecycle as a plain run: checkpoints, and each site booked its
    # privacy spend under the run directory's name (the run key), not Flower's run id
    assert load_latest(tmp_path / "run").round == 2
    key = RunDirectory.open_existing(tmp_path / "run").run_key()  # "run-<random suffix>"
    assert _booked_runs(config) == {"hospital-a": [key], "hospital-b": [key]}

    # Execute: lose round 2 (as if the coordinator died after round 1) and resume
    (tmp_path / "run" / CHECKPOINT_DIR / "round-0002.npz").unlink()
    resumed: dict[int, FitResults] = {}
    _run_secagg(config.replace(**{"run.resume": True}), tmp_path / "again", resumed)

    # Assert: only round 2 ran again, under its true number and the same run key
    assert sorted(resumed) == [2]
    lines = [
        json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()
    ]
    assert [line["round"] for line in lines] == [1, 2]
    assert load_latest(tmp_path / "run").round == 2
    key = RunDirectory.open_existing(tmp_path / "run").run_key()  # "run-<random suffix>"
    assert _booked_runs(config) == {"hospital-a": [key], "hospital-b": [key]}


def test_a_site_larger_than_max_weight_refuses_to_send() -> None:
    config = MedfedConfig().replace(
        **{"secagg.enabled": True, "validation.enabled": False, "secagg.max-weight": 100.0}
    )
    initial = build_model(config.model, config.data.channels)
    arrays = [p.detach().numpy() for p in initial.state_dict().values()]

    def train(content: RecordDict, context: Context) -> RecordDict:
        metrics = MetricRecord({keys.NUM_EXAMPLES: 101, keys.TRAIN_LOSS: 0.5})
        return RecordDict({keys.ARRAYS: content[keys.ARRAYS], keys.METRICS: metrics})

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    client = SiteClient(context, SiteHandlers(train=train, evaluate=train))

    with pytest.raises(ConfigError, match=r"more than secagg.max-weight=100"):
        client.fit(arrays, {**encode_round_settings(config, "run"), keys.SERVER_ROUND: 1})
