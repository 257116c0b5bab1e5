"""Real deployment on 127.0.0.1: SuperLink + two SuperNodes as processes, TLS + node auth.

Certificates and keys come from ``medfed certs``; the command lines from ``deploy.commands``
(the README recipe's flags). Two canary hospitals (a checkerboard block in every image, a
known fake patient name in every header) train for two rounds; each SuperNode keeps an
outbound audit (``audit-dir``) of everything its ClientApp sent, which the wire test reads.
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
from deploy_support import (
    CANARY_PATIENT,
    CANARY_PATIENT_ID,
    REPO_ROOT,
    Processes,
    Started,
    canary_pattern,
    flwr_env,
    make_canary_site,
    online_nodes,
    port_open,
    run,
    wait_until,
)
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.serde import message_to_proto
from scipy.signal import fftconvolve

from client.outbound import read_audit
from common import keys
from common.config import MedfedConfig
from common.data.sites import load_site
from common.models import build_model
from deploy.certs import CA_CERT, site_key_paths
from deploy.commands import (
    SuperLinkSpec,
    SuperNodeSpec,
    flwr_config_toml,
    register_command,
    run_command,
    superlink_command,
    supernode_command,
)
from medfed.cli import main as medfed_main
from server.rundir import CONFIG_FILE, METRICS_FILE, MODEL_FILE, REPORT_FILE

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
SUPERLINK_PORT = 19110
NODE_PORTS = (19111, 19112, 19113)
CONNECTION = "medfed"
SITES = ("hospital-a", "hospital-b")
IMAGES_PER_SITE = 24
ROUNDS = 2


@dataclass
class Federation:
    """A running SuperLink with two registered, connected hospitals."""

    root: Path
    certs: Path
    data: dict[str, Path]
    audit: dict[str, Path]
    env: dict[str, str]
    processes: Processes
    superlink: Started

    def supernode(self, name: str, key: Path | None, ca: Path | None, port: int) -> Started:
        spec = SuperNodeSpec(
            superlink=f"{HOST}:{SUPERLINK_PORT}",
            ca_cert=ca,
            private_key=key,
            data_path=self.data[SITES[0]],
            site_id=name,
            partition_id=9,
            port=port,
        )
        node_env = flwr_env(self.root / f"flwr-home-{name}")
        return self.processes.start(name, supernode_command(spec), node_env)


def _fail_with_log(entry: Started, what: str) -> None:
    tail = "\n".join(entry.output().splitlines()[-25:])
    pytest.fail(f"{what}; last lines of {entry.name}:\n{tail}")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("deploy")
    certs = root / "certs"
    assert medfed_main(["certs", "init", str(certs), "--server-name", "localhost"]) == 0
    for site in (*SITES, "intruder"):
        assert medfed_main(["certs", "add-site", str(certs), site]) == 0
    data = {
        site: make_canary_site(root / "data" / site, i, IMAGES_PER_SITE)
        for i, site in enumerate(SITES)
    }
    env = flwr_env(root / "flwr-home-coordinator")
    Path(env["FLWR_HOME"]).mkdir()
    (Path(env["FLWR_HOME"]) / "config.toml").write_text(
        flwr_config_toml(CONNECTION, f"{HOST}:{SUPERLINK_PORT}", certs / CA_CERT)
    )
    assert not port_open(HOST, SUPERLINK_PORT), f"port {SUPERLINK_PORT} is already in use"
    processes = Processes(root)
    try:
        superlink = processes.start(
            "superlink",
            superlink_command(SuperLinkSpec(certs, root / "superlink.db", HOST, SUPERLINK_PORT)),
            env,
        )
        wait_until(
            lambda: port_open(HOST, SUPERLINK_PORT) or superlink.process.poll() is not None,
            60,
            "the SuperLink port",
        )
        if superlink.process.poll() is not None:
            _fail_with_log(superlink, "the SuperLink exited")
        audit = {site: root / "audit" / site for site in SITES}
        for index, site in enumerate(SITES):
            keyfiles = site_key_paths(certs, site)
            registered = run(register_command(keyfiles.public_key, CONNECTION, site), env, 60)
            assert registered.returncode == 0, registered.stdout + registered.stderr
            spec = SuperNodeSpec(
                superlink=f"{HOST}:{SUPERLINK_PORT}",
                ca_cert=certs / CA_CERT,
                private_key=keyfiles.private_key,
                data_path=data[site],
                site_id=site,
                partition_id=index,
                port=NODE_PORTS[index],
                extra_node_config={keys.NODE_AUDIT_DIR: str(audit[site])},
            )
            processes.start(site, supernode_command(spec), flwr_env(root / f"flwr-home-{site}"))
        wait_until(lambda: online_nodes(CONNECTION, env) == len(SITES), 90, "two online nodes")
        yield Federation(root, certs, data, audit, env, processes, superlink)
    finally:
        processes.stop_all()


@dataclass
class CompletedRun:
    output: str
    run_dir: Path


@pytest.fixture(scope="module")
def completed_run(federation: Federation) -> CompletedRun:
    runs_dir = federation.root / "runs"
    command = run_command(
        REPO_ROOT,
        CONNECTION,
        {"federation.num-rounds": ROUNDS, "run.runs-dir": str(runs_dir), "run.name": "deploy"},
    )
    result = run(command, federation.env, 170)
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
    return torch.cat([data.train_x, data.test_x]).flatten(1).numpy().astype(np.float64)


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
    expected = {keys.ARRAYS, keys.METRICS} if kind == "train" else {keys.METRICS}
    assert set(content.keys()) == expected
    allowed = keys.TRAIN_METRICS_ALLOWED if kind == "train" else keys.EVAL_METRICS_ALLOWED
    for name, record in content.items():
        assert not isinstance(record, ConfigRecord), name
        if isinstance(record, ArrayRecord):
            assert name == keys.ARRAYS
            assert {k: tuple(a.shape) for k, a in record.items()} == shapes
        if isinstance(record, MetricRecord):
            assert set(record) <= allowed, set(record) - allowed
            assert all(isinstance(v, int | float) for v in record.values())


def _forbidden_bytes(federation: Federation) -> list[bytes]:
    """Things that must never appear in any serialised message a site sends."""
    texts = [CANARY_PATIENT, *CANARY_PATIENT.split("^"), CANARY_PATIENT_ID, "labels.csv", ".dcm"]
    texts += [str(path) for path in federation.data.values()] + [str(federation.root)]
    needles = [t.encode() for t in texts] + [t.lower().encode() for t in texts]
    row = canary_pattern()[0]
    for values in (row, 1.0 - row, row * 2 - 1):  # model inputs, both polarities, normalised
        needles.append(values[:8].astype(np.float32).tobytes())
    for stored in (row * 4095, (1 - row) * 4095):  # raw DICOM pixel values
        needles.append(stored[:8].astype("<u2").tobytes())
    return needles


def test_sites_send_only_parameters_and_allowed_scalars(
    completed_run: CompletedRun, federation: Federation
) -> None:
    shapes = _model_shapes()
    needles = _forbidden_bytes(federation)
    images = np.concatenate([_site_images(path) for path in federation.data.values()])
    canary = canary_pattern()
    for site in SITES:
        messages = list(read_audit(federation.audit[site]))
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


def test_unregistered_key_is_refused(federation: Federation) -> None:
    intruder = site_key_paths(federation.certs, "intruder").private_key
    node = federation.supernode("intruder", intruder, federation.certs / CA_CERT, NODE_PORTS[2])
    try:
        node.process.wait(timeout=90)
    finally:
        federation.processes.stop(node)

    assert node.process.returncode != 0
    assert "Failed to activate SuperNode" in node.output()
    assert online_nodes(CONNECTION, federation.env) == len(SITES)


@pytest.mark.parametrize("trust", ["system-cas", "another-ca"])
def test_supernode_without_the_ca_cannot_connect(
    federation: Federation, trust: str, tmp_path: Path
) -> None:
    other_ca = None
    if trust == "another-ca":
        assert medfed_main(["certs", "init", str(tmp_path / "other"), "--server-name", HOST]) == 0
        other_ca = tmp_path / "other" / CA_CERT
    registered_key = site_key_paths(federation.certs, SITES[0]).private_key
    node = federation.supernode(f"untrusting-{trust}", registered_key, other_ca, NODE_PORTS[2])
    try:
        node.process.wait(timeout=90)
    finally:
        federation.processes.stop(node)

    assert node.process.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in node.output()


def test_flwr_cli_without_the_ca_cannot_connect(federation: Federation, tmp_path: Path) -> None:
    env = flwr_env(tmp_path / "flwr-home")
    Path(env["FLWR_HOME"]).mkdir()
    (Path(env["FLWR_HOME"]) / "config.toml").write_text(
        flwr_config_toml(CONNECTION, f"{HOST}:{SUPERLINK_PORT}", None)
    )

    result = run(["flwr", "supernode", "ls", CONNECTION], env, 60)

    assert result.returncode != 0
    assert re.search(r"unavailable|CERTIFICATE_VERIFY_FAILED", result.stdout + result.stderr)
