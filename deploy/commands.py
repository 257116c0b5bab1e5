"""The exact Flower 1.42 command lines of a medfed deployment, built in one place.

The README's "Deploy across hospitals" recipe spells these out for people; the deployment
tests and the benchmark start real processes from these builders, and a test checks that
the README uses the same flags. Paths are made absolute (Flower hands certificate paths
to subprocesses as given). Secure by default: TLS and node authentication are always on
unless ``insecure=True`` is passed explicitly, which warns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy.certs import CA_CERT, SERVER_CERT, SERVER_KEY

LOG = logging.getLogger("medfed.deploy")
INSECURE_WARNING = (
    "INSECURE deployment: no TLS and no node authentication; anyone on the network can "
    "read the model updates, join as a hospital and start runs. Use only on a test machine."
)
ConfigValue = bool | int | float | str


def _abs(path: Path) -> str:
    return str(Path(path).expanduser().resolve())


def toml_value(value: ConfigValue) -> str:
    """A value as Flower's ``--run-config`` / ``--node-config`` parser expects it (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def key_values(values: Mapping[str, ConfigValue]) -> str:
    """``k1=v1 k2="v2"`` for ``--node-config`` and ``--run-config``."""
    return " ".join(f"{key}={toml_value(value)}" for key, value in values.items())


def _warn_insecure(insecure: bool) -> None:
    if insecure:
        LOG.warning(INSECURE_WARNING)


@dataclass(frozen=True)
class SuperLinkSpec:
    """The coordinator's SuperLink: one HTTPS port for the Fleet, Control and Runtime APIs."""

    certs: Path
    database: Path
    host: str = "127.0.0.1"
    port: int = 9092
    insecure: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def superlink_command(spec: SuperLinkSpec) -> list[str]:
    """``flower-superlink`` with TLS, node authentication and a persistent state database."""
    _warn_insecure(spec.insecure)
    security = (
        ["--insecure"]
        if spec.insecure
        else [
            "--ssl-ca-certfile",
            _abs(spec.certs / CA_CERT),
            "--ssl-certfile",
            _abs(spec.certs / SERVER_CERT),
            "--ssl-keyfile",
            _abs(spec.certs / SERVER_KEY),
            "--enable-supernode-auth",
        ]
    )
    return [
        "flower-superlink",
        *security,
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--database",
        _abs(spec.database),
        "--disable-runtime-dependency-installation",
    ]


@dataclass(frozen=True)
class SuperNodeSpec:
    """One hospital's SuperNode: where the SuperLink is, its key, and its data folder."""

    superlink: str
    ca_cert: Path | None
    private_key: Path | None
    data_path: Path
    site_id: str
    partition_id: int
    port: int = 9094
    insecure: bool = False
    state_dir: Path | None = None
    ledger_key: Path | None = None  # signs the site's privacy ledger (``medfed certs add-site``)
    extra_node_config: Mapping[str, ConfigValue] = field(default_factory=dict)
    # The site's gate (``medfed site executor``) runs its tasks: only approved apps run,
    # each in one warm process per app (``warm_gate`` False: a fresh process per task).
    approving: bool = True
    warm_gate: bool = True

    @property
    def runtime_api_address(self) -> str:
        """The node's local Runtime API (loopback only), where its executor connects."""
        return f"127.0.0.1:{self.port}"

    def node_config(self) -> dict[str, ConfigValue]:
        """``--node-config`` values read by ``client.site``, ``client.budget``, …"""
        values: dict[str, ConfigValue] = {
            "partition-id": self.partition_id,
            "site-id": self.site_id,
            "data-path": _abs(self.data_path),
        }
        if self.state_dir is not None:  # the site's privacy accountant state
            values["state-dir"] = _abs(self.state_dir)
        if self.ledger_key is not None:
            values["ledger-key"] = _abs(self.ledger_key)
        return {**values, **self.extra_node_config}


def supernode_command(spec: SuperNodeSpec) -> list[str]:
    """``flower-supernode`` verifying the SuperLink with the CA and signing with its key."""
    _warn_insecure(spec.insecure)
    security: list[str] = []
    if spec.insecure:
        security.append("--insecure")
    else:
        if spec.ca_cert is not None:
            security += ["--root-certificates", _abs(spec.ca_cert)]
        if spec.private_key is not None:
            security += ["--auth-supernode-private-key", _abs(spec.private_key)]
    isolation = ["--isolation", "process"] if spec.approving else []
    return [
        "flower-supernode",
        "--superlink",
        spec.superlink,
        *security,
        *isolation,
        "--host",
        "127.0.0.1",
        "--port",
        str(spec.port),
        "--node-config",
        key_values(spec.node_config()),
    ]


def executor_command(spec: SuperNodeSpec) -> list[str]:
    """``medfed site executor``: the site's gate beside a ``--isolation process`` SuperNode.

    It runs a task only if the app's FAB hash is approved in the site's state directory.
    """
    if spec.state_dir is None:
        raise ValueError(f"SuperNode {spec.site_id}: the approving executor needs a state_dir")
    return [
        "medfed",
        "site",
        "executor",
        "--runtime-api-address",
        spec.runtime_api_address,
        "--state-dir",
        _abs(spec.state_dir),
        *([] if spec.warm_gate else ["--cold"]),
    ]


def flwr_config_toml(
    name: str, address: str, ca_cert: Path | None, *, insecure: bool = False
) -> str:
    """``$FLWR_HOME/config.toml`` naming the SuperLink connection used by the ``flwr`` CLI."""
    _warn_insecure(insecure)
    lines = [
        "[superlink]",
        f'default = "{name}"',
        "",
        f"[superlink.{name}]",
        f'address = "{address}"',
    ]
    if insecure:
        lines.append("insecure = true")
    elif ca_cert is not None:
        lines.append(f'root-certificates = "{_abs(ca_cert)}"')
    return "\n".join(lines) + "\n"


def register_command(public_key: Path, connection: str, site_id: str) -> list[str]:
    """``flwr supernode register``: allow a hospital's public key (Control API)."""
    return ["flwr", "supernode", "register", _abs(public_key), connection, "--name", site_id]


def run_command(
    app_dir: Path, connection: str, run_config: Mapping[str, ConfigValue] | None = None
) -> list[str]:
    """``flwr run`` of the medfed app on a named SuperLink connection, streaming logs."""
    command = ["flwr", "run", _abs(app_dir), connection, "--stream"]
    if run_config:
        command += ["--run-config", key_values(run_config)]
    return command
