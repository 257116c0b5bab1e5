"""Real deployment on 127.0.0.1: SuperLink + two SuperNodes as processes, TLS + node auth.

``medfed.testing.federation.LocalFederation`` starts them the way the README recipe does
(certificates and keys from ``deploy.certs``, command lines from ``deploy.commands``). Two canary
hospitals (a checkerboard block in every image, a known fake patient name in every header)
train for two rounds; each SuperNode keeps an outbound audit (``audit-dir``) of everything
its ClientApp sent, which the wire test reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.serde import message_to_proto
from scipy.signal import fftconvolve

from client.outbound import read_audit
from common import keys
from common.config import MedfedConfig
from common.data.sites import load_site
from common.models import build_model
from deploy.certs import CA_CERT, site_key_paths
from deploy.commands import SuperNodeSpec, flwr_config_toml
from medfed.cli import main as medfed_main
from medfed.testing.federation import (
    CONNECTION,
    HOST,
    Hospital,
    LocalFederation,
    Started,
    flwr_env,
    online_nodes,
    run,
)
from medfed.testing.timing import scaled
from server.rundir import CONFIG_FILE, METRICS_FILE, MODEL_FILE, REPORT_FILE
from tests.deploy_support import (
    CANARY_PATIENT,
    CANARY_PATIENT_ID,
    REPO_ROOT,
    canary_pattern,
    make_canary_site,
)

pytestmark = pytest.mark.slow

SUPERLINK_PORT = 19110
NODE_PORTS = (19111, 19112)
SPARE_NODE_PORT = 19113
SITES = ("hospital-a", "hospital-b")
IMAGES_PER_SITE = 24
ROUNDS = 2


@dataclass
class Deployment:
    """The running federation plus where the test put the hospitals' data and audits."""

    federation: LocalFederation
    data: dict[str, Path]
    audit: dict[str, Path]

    def extra_supernode(self, name: str, key: Path | None, ca: Path | None) -> Started:
        """One more SuperNode process (stopped by the caller), on the spare port."""
        spec = SuperNodeSpec(
            superlink=self.federation.address,
            ca_cert=ca,
            private_key=key,
            data_path=self.data[SITES[0]],
            site_id=name,
            partition_id=9,
            port=SPARE_NODE_PORT,
            state_dir=self.federation.state_dir(name),
        )
        return self.federation.start_supernode(name, spec)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    data = {
        site: make_canary_site(root / "data" / site, index, IMAGES_PER_SITE)
        for index, site in enumerate(SITES)
    }
    audit = {site: root / "audit" / site for site in SITES}
    hospitals = [
        Hospital(site, data[site], {keys.NODE_AUDIT_DIR: str(audit[site])}) for site in SITES
    ]
    with LocalFederation(
        root / "federation", hospitals, SUPERLINK_PORT, NODE_PORTS, approved_apps=[REPO_ROOT]
    ) as federation:
        yield Deployment(federation, data, audit)


@dataclass
class CompletedRun:
    output: str
    run_dir: Path


@pytest.fixture(scope="module")
def completed_run(deployment: Deployment) -> CompletedRun:
    runs_dir = deployment.federation.root / "runs"
    run_config = {
        "federation.num-rounds": ROUNDS,
        "run.runs-dir": str(runs_dir),
        "run.name": "deploy",
    }
    result = deployment.federation.run(REPO_ROOT, run_config, timeout=scaled(170))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    run_dirs = sorted(runs_dir.glob("*-deploy"))
    assert len(run_dirs) == 1, output[-3000:]
    return CompletedRun(output, run_dirs[0])


def test_two_rounds_over_tls_with_node_authentication(completed_run: CompletedRun) -> None:
    run_dir = completed_run.run_dir
    lines = [line for line in (run_dir / METRICS_FILE).read_text().splitlines() if line]
    rounds = [json.loads(line) for line in lines]

    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    for name in (CONFIG_FILE, MODEL_FILE, REPORT_FILE):
        assert (run_dir / name).is_file(), name
    final = rounds[-1]
    assert len(final["train_sites"]) == len(final["eval_sites"]) == len(SITES)
    assert final["epsilon_max"] is not None and final["epsilon_max"] > 0
    assert set(final["epsilon"]) == set(final["train_sites"])


def _model_shapes() -> dict[str, tuple[int, ...]]:
    config = MedfedConfig()
    model = build_model(config.model, config.data.channels)
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def _site_images(path: Path) -> np.ndarray:
    """Every image of a site as the model sees it, one flattened row per image."""
    data = load_site(path, MedfedConfig().data, path.name)
    return torch.cat([data.train_x, data.val_x, data.test_x]).flatten(1).numpy().astype(np.float64)


def _max_window_correlation(array: np.ndarray, pattern: np.ndarray) -> float:
    """Largest |Pearson r| between ``pattern`` and any contiguous window of ``array``."""
    a = array.ravel().astype(np.float64)
    x = pattern.ravel().astype(np.float64)
    n = x.size
    if a.size < n or x.std() == 0:
        return 0.0
    x = (x - x.mean()) / x.std()
    dots = fftconvolve(a, x[::-1], mode="valid")
    c1 = np.concatenate([[0.0], np.cumsum(a)])
    c2 = np.concatenate([[0.0], np.cumsum(a * a)])
    mean = (c1[n:] - c1[:-n]) / n
    var = (c2[n:] - c2[:-n]) / n - mean**2
    valid = var > 1e-12
    if not valid.any():
        return 0.0
    return float(np.max(np.abs(dots[valid] / (n * np.sqrt(var[valid])))))


def _check_structure(message: Message, shapes: dict[str, tuple[int, ...]]) -> None:
    """Only model-shaped arrays under ``arrays`` and allow-listed numeric metrics."""
    kind = message.metadata.message_type
    assert not message.has_error(), message.error.reason
    assert kind in {"train", "evaluate"}
    content = message.content
    # a trained DP round also carries the site's signed privacy-ledger record
    expected = {keys.ARRAYS, keys.METRICS, keys.ATTESTATION} if kind == "train" else {keys.METRICS}
    assert set(content.keys()) == expected
    allowed = keys.TRAIN_METRICS_ALLOWED if kind == "train" else keys.EVAL_METRICS_ALLOWED
    for name, record in content.items():
        if isinstance(record, ConfigRecord):
            assert name == keys.ATTESTATION
            assert {k: type(v) for k, v in record.items()} == keys.ATTESTATION_ALLOWED
            continue
        if isinstance(record, ArrayRecord):
            assert name == keys.ARRAYS
            assert {k: tuple(a.shape) for k, a in record.items()} == shapes
        if isinstance(record, MetricRecord):
            assert set(record) <= allowed, set(record) - allowed
            assert all(isinstance(v, int | float) for v in record.values())


def _forbidden_bytes(deployment: Deployment) -> list[bytes]:
    """Things that must never appear in any serialised message a site sends."""
    texts = [CANARY_PATIENT, *CANARY_PATIENT.split("^"), CANARY_PATIENT_ID, "labels.csv", ".dcm"]
    texts += [str(path) for path in deployment.data.values()]
    texts += [str(deployment.federation.root.parent)]
    needles = [t.encode() for t in texts] + [t.lower().encode() for t in texts]
    row = canary_pattern()[0]
    for values in (row, 1.0 - row, row * 2 - 1):  # model inputs, both polarities, normalised
        needles.append(values[:8].astype(np.float32).tobytes())
    for stored in (row * 4095, (1 - row) * 4095):  # raw DICOM pixel values
        needles.append(stored[:8].astype("<u2").tobytes())
    return needles


def test_sites_send_only_parameters_and_allowed_scalars(
    completed_run: CompletedRun, deployment: Deployment
) -> None:
    shapes = _model_shapes()
    needles = _forbidden_bytes(deployment)
    images = np.concatenate([_site_images(path) for path in deployment.data.values()])
    canary = canary_pattern()
    for site in SITES:
        messages = list(read_audit(deployment.audit[site]))
        kinds = sorted(m.metadata.message_type for _, m in messages)
        assert kinds == ["evaluate"] * ROUNDS + ["train"] * ROUNDS, kinds
        for path, message in messages:
            _check_structure(message, shapes)
            wire = path.read_bytes()
            assert wire == message_to_proto(message).SerializeToString()
            for needle in needles:
                assert needle not in wire, (site, needle)
            for record in message.content.array_records.values():
                for name, array in record.items():
                    values = array.numpy()
                    assert _max_window_correlation(values, canary) < 0.5, name
                    for image in images:
                        if values.size >= image.size:
                            assert _max_window_correlation(values, image) < 0.5, name


def _wait_for_exit(deployment: Deployment, name: str, node: Started) -> int:
    try:
        return node.process.wait(timeout=scaled(90))
    finally:
        deployment.federation.stop_supernode(name)  # and its gate


def test_unregistered_key_is_refused(deployment: Deployment) -> None:
    certs = deployment.federation.certs
    medfed_main(["certs", "add-site", str(certs), "intruder"])  # a valid key, never registered
    intruder = site_key_paths(certs, "intruder").private_key
    node = deployment.extra_supernode("intruder", intruder, certs / CA_CERT)

    code = _wait_for_exit(deployment, "intruder", node)

    assert code != 0
    assert "Failed to activate SuperNode" in node.output()
    assert online_nodes(deployment.federation.env) == len(SITES)


@pytest.mark.parametrize("trust", ["system-cas", "another-ca"])
def test_supernode_without_the_ca_cannot_connect(
    deployment: Deployment, trust: str, tmp_path: Path
) -> None:
    other_ca = None
    if trust == "another-ca":
        assert medfed_main(["certs", "init", str(tmp_path / "other"), "--server-name", HOST]) == 0
        other_ca = tmp_path / "other" / CA_CERT
    registered_key = site_key_paths(deployment.federation.certs, SITES[0]).private_key
    node = deployment.extra_supernode(f"untrusting-{trust}", registered_key, other_ca)

    code = _wait_for_exit(deployment, f"untrusting-{trust}", node)

    assert code != 0
    assert "CERTIFICATE_VERIFY_FAILED" in node.output()


def test_flwr_cli_without_the_ca_cannot_connect(deployment: Deployment, tmp_path: Path) -> None:
    env = flwr_env(tmp_path / "flwr-home")
    (tmp_path / "flwr-home" / "config.toml").write_text(
        flwr_config_toml(CONNECTION, deployment.federation.address, None)
    )

    result = run(["flwr", "supernode", "ls", CONNECTION], env, scaled(60))

    assert result.returncode != 0
    assert re.search(r"unavailable|CERTIFICATE_VERIFY_FAILED", result.stdout + result.stderr)
