"""A whole deployment on one machine, as real processes: for tests and benchmarks.

``LocalFederation`` does what the README recipe does by hand: certificates and node keys
(``deploy.certs``), a SuperLink with TLS and node authentication, registration of each
hospital's public key, optionally the Fleet-only nginx gateway (``deploy.gateway``) that the
hospitals then dial instead of the SuperLink, one SuperNode per hospital (``deploy.commands``
builds every command line), and ``flwr run`` on the coordinator's loopback connection.
Each process gets its own session and is stopped by that process group id, so exactly the
processes started here are stopped (Flower's SuperExec and app processes are children that
exit with their parent). Nothing listens beyond 127.0.0.1. Every wait is bounded, in seconds
scaled to the machine's current speed (``medfed.testing.timing``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from client.approvals import ApprovalStore, release_hash
from deploy.certs import CA_CERT, add_site, init_authority, parse_server_names, site_key_paths
from deploy.commands import (
    ConfigValue,
    SuperLinkSpec,
    SuperNodeSpec,
    executor_command,
    flwr_config_toml,
    register_command,
    run_command,
    superlink_command,
    supernode_command,
)
from deploy.gateway import (
    Endpoint,
    GatewaySpec,
    nginx_command,
    nginx_executable,
    write_gateway_config,
)
from medfed.testing.timing import scaled

HOST = "127.0.0.1"
CONNECTION = "medfed"
ACTIVATED = "SuperNode ID:"  # what flower-supernode logs once the SuperLink activated it


def flwr_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower processes: own FLWR_HOME, this venv's tools first, no uv sync."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Started:
    """One started process and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


@dataclass
class Processes:
    """Starts processes in their own process group and stops exactly those groups."""

    log_dir: Path
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Started:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as handle:
            process = subprocess.Popen(
                list(argv),
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=self.log_dir,
                start_new_session=True,
            )
        entry = Started(name, process, log)
        self.started.append(entry)
        return entry

    def stop(self, entry: Started, timeout: float | None = None) -> None:
        """SIGTERM the process group, then SIGKILL whatever of it is left.

        Flower starts some children in sessions of their own (the SuperLink's SuperExec and
        its ServerApp process): their groups, found below the leader before it is signalled,
        get the SIGKILL too. The leader is left unreaped (a zombie) until its group has been
        killed, so its process id, which is the group id, cannot be reused meanwhile.
        """
        timeout = scaled(15) if timeout is None else timeout
        group = entry.process.pid
        if entry.process.returncode is None:
            below = _groups_below(group)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not _exited(group):
                time.sleep(0.1)
            _kill_groups([group, *below])
        entry.process.wait(timeout=timeout)

    def kill(self, entry: Started) -> None:
        """SIGKILL the process group (and its children's own groups) at once, as a power cut
        or an OOM kill would."""
        if entry.process.returncode is None:
            _kill_groups([entry.process.pid, *_groups_below(entry.process.pid)])
        entry.process.wait(timeout=scaled(15))

    def stop_all(self) -> None:
        for entry in reversed(self.started):
            self.stop(entry)


def _kill_groups(groups: Sequence[int]) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def _groups_below(pid: int) -> list[int]:
    """Process group ids of every live descendant of ``pid`` other than its own (Linux)."""
    children: dict[int, list[int]] = {}
    for proc_stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(proc_stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(proc_stat.parent.name))
    groups: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            with contextlib.suppress(ProcessLookupError):
                group = os.getpgid(child)
                if group != pid and group not in groups:
                    groups.append(group)
    return groups


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def run(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a short command (``flwr …``) to completion and capture its output."""
    return subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` twice a second; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def online_nodes(env: Mapping[str, str], connection: str = CONNECTION) -> int:
    """How many SuperNodes the SuperLink lists as online (``flwr supernode ls``)."""
    result = run(["flwr", "supernode", "ls", connection, "--format", "json"], env, scaled(60))
    try:
        nodes = json.loads(result.stdout).get("nodes", [])
    except json.JSONDecodeError:
        return 0
    return sum(1 for node in nodes if node.get("status") == "online")


@dataclass(frozen=True)
class Hospital:
    """One site of a local federation: its id, data folder and extra node config.

    ``user`` = (uid, gid): the site's SuperNode, gate and ClientApp run as that unprivileged
    user (``setpriv``), from a site folder only it can write (its key, the CA, its state
    directory and Flower home), reading the data folder it was given. The federation's root
    must then be reachable by that user (not under a private temporary folder).
    """

    site_id: str
    data_path: Path
    extra_node_config: Mapping[str, ConfigValue] = field(default_factory=dict)
    user: tuple[int, int] | None = None


@dataclass
class LocalFederation:
    """SuperLink + registered SuperNodes on 127.0.0.1; use as a context manager."""

    root: Path
    hospitals: Sequence[Hospital]
    superlink_port: int
    node_ports: Sequence[int]
    gateway_port: int | None = None
    start_timeout: float = field(default_factory=lambda: scaled(120))
    # Apps (project folders) every hospital approves before its SuperNode starts; with
    # ``approving`` False the SuperNodes run any app, as plain Flower does.
    approved_apps: Sequence[Path] = ()
    approving: bool = True
    warm: bool = True  # the gates keep one warm ClientApp process per approved app
    processes: Processes = field(init=False)
    certs: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    nodes: dict[str, tuple[SuperNodeSpec, list[Started]]] = field(init=False)
    superlink: Started = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.processes = Processes(self.root)
        self.certs = self.root / "certs"
        self.env = flwr_env(self.root / "flwr-home-coordinator")
        self.nodes = {}

    @property
    def address(self) -> str:
        """The SuperLink itself (Control API: coordinator only)."""
        return f"{HOST}:{self.superlink_port}"

    @property
    def fleet_address(self) -> str:
        """What the hospitals dial: the gateway when there is one, else the SuperLink."""
        return self.address if self.gateway_port is None else f"{HOST}:{self.gateway_port}"

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.processes.stop_all()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.processes.stop_all()

    def start(self) -> None:
        """Certificates, SuperLink, registration, SuperNodes; returns when all are online."""
        if port_open(HOST, self.superlink_port):
            raise RuntimeError(f"port {self.superlink_port} is already in use")
        init_authority(self.certs, parse_server_names(HOST))
        for hospital in self.hospitals:
            add_site(self.certs, hospital.site_id)
        config = Path(self.env["FLWR_HOME"]) / "config.toml"
        config.write_text(flwr_config_toml(CONNECTION, self.address, self.certs / CA_CERT))
        self.start_superlink()
        if self.gateway_port is not None:
            self.start_gateway(self.gateway_port)
        for index, hospital in enumerate(self.hospitals):
            keyfiles = site_key_paths(self.certs, hospital.site_id)
            result = run(
                register_command(keyfiles.public_key, CONNECTION, hospital.site_id),
                self.env,
                scaled(60),
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"registering {hospital.site_id} failed: {result.stdout}{result.stderr}"
                )
            state_dir = self.state_dir(hospital.site_id)
            for app in self.approved_apps:
                ApprovalStore(state_dir).approve(release_hash(Path(app)), f"test approval of {app}")
            ca_cert, private_key = self.certs / CA_CERT, keyfiles.private_key
            if hospital.user is not None:
                ca_cert, private_key = self._hand_over(hospital, ca_cert, private_key)
            self.start_supernode(
                hospital.site_id,
                SuperNodeSpec(
                    superlink=self.fleet_address,
                    ca_cert=ca_cert,
                    private_key=private_key,
                    data_path=hospital.data_path,
                    site_id=hospital.site_id,
                    partition_id=index,
                    port=self.node_ports[index],
                    state_dir=state_dir,
                    extra_node_config=hospital.extra_node_config,
                    approving=self.approving,
                    warm_gate=self.warm,
                ),
            )
        wait_until(
            lambda: online_nodes(self.env) == len(self.hospitals),
            self.start_timeout,
            f"{len(self.hospitals)} online SuperNodes",
        )

    def start_superlink(self) -> Started:
        """The SuperLink (TLS, node auth, state in ``superlink.db``); returns once it listens.

        Started again after a kill it reopens the same database: node registrations and runs
        survive, and the SuperNodes reconnect by themselves.
        """
        spec = SuperLinkSpec(self.certs, self.root / "superlink.db", HOST, self.superlink_port)
        superlink = self.processes.start("superlink", superlink_command(spec), self.env)
        self.superlink = superlink
        try:
            wait_until(
                lambda: (
                    port_open(HOST, self.superlink_port) or superlink.process.poll() is not None
                ),
                self.start_timeout,
                "the SuperLink",
            )
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n{superlink.tail()}") from None
        if superlink.process.poll() is not None:
            raise RuntimeError(f"the SuperLink exited:\n{superlink.tail()}")
        return superlink

    def kill_superlink(self) -> None:
        """``kill -9`` the SuperLink and everything it started (its ServerApp process too)."""
        self.processes.kill(self.superlink)
        wait_until(
            lambda: not port_open(HOST, self.superlink_port),
            self.start_timeout,
            "the killed SuperLink's port to close",
        )

    def kill_supernode(self, name: str) -> None:
        """``kill -9`` a hospital's SuperNode and its gate (with their ClientApp processes)."""
        _, started = self.nodes[name]
        for entry in started:
            self.processes.kill(entry)

    def start_supernode_again(self, name: str) -> Started:
        """Start a killed hospital again with the same settings, as a service manager would.

        After a ``kill -9`` the SuperLink still counts the dead node as online until it misses
        its heartbeats (flwr 1.42: 2 intervals of 30 s), and refuses the restarted one
        (``[code: 2004] Failed to activate SuperNode``, exit 305). Like ``Restart=always`` in
        systemd, the node (and its gate) is then stopped and started again, until it is
        activated or ``start_timeout`` has passed.
        """
        spec, _ = self.nodes[name]
        deadline = time.monotonic() + self.start_timeout
        while True:
            node = self.start_supernode(name, spec)
            offset = len(node.output())

            def settled(node: Started = node, offset: int = offset) -> bool:
                return node.process.poll() is not None or ACTIVATED in node.output()[offset:]

            wait_until(settled, max(1.0, deadline - time.monotonic()), f"{name} to activate")
            if node.process.poll() is None:
                return node
            self.stop_supernode(name)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not activated again:\n{node.tail()}")
            time.sleep(2.0)  # a service manager's restart delay

    def start_gateway(self, port: int) -> Started:
        """nginx forwarding only the SuperNode's Fleet routes to the loopback SuperLink."""
        nginx = nginx_executable()
        if nginx is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
        spec = GatewaySpec(self.certs, Endpoint(HOST, port), Endpoint(HOST, self.superlink_port))
        gateway = self.processes.start(
            "gateway", nginx_command(write_gateway_config(spec), nginx), self.env
        )
        wait_until(
            lambda: port_open(HOST, port) or gateway.process.poll() is not None,
            self.start_timeout,
            "the gateway",
        )
        if gateway.process.poll() is not None:
            raise RuntimeError(f"nginx exited:\n{gateway.tail()}")
        return gateway

    def state_dir(self, site_id: str) -> Path:
        """A hospital's state directory (privacy state, approvals)."""
        return self.site_home(site_id) / "state"

    def site_home(self, site_id: str) -> Path:
        """A hospital's own folder: state, Flower home, its copies of its key and the CA."""
        return self.root / "sites" / site_id

    def _hand_over(self, hospital: Hospital, ca_cert: Path, key: Path) -> tuple[Path, Path]:
        """Give an unprivileged hospital its own copies of the CA and its key, and its folder."""
        assert hospital.user is not None
        home = self.site_home(hospital.site_id)
        home.mkdir(parents=True, exist_ok=True)
        (home / "flwr-home").mkdir(exist_ok=True)
        own_ca, own_key = home / CA_CERT, home / key.name
        shutil.copyfile(ca_cert, own_ca)
        shutil.copyfile(key, own_key)
        own_key.chmod(0o600)
        uid, gid = hospital.user
        for path in [home, *home.rglob("*")]:
            os.chown(path, uid, gid)
        data = Path(hospital.data_path)
        for path in [data, *data.rglob("*")]:  # the data: readable by the site's group only
            os.chown(path, -1, gid)
            path.chmod(
                (path.stat().st_mode | stat.S_IRGRP) | (stat.S_IXGRP if path.is_dir() else 0)
            )
        return own_ca, own_key

    def _node_env(self, name: str) -> dict[str, str]:
        env = flwr_env(self.site_home(name) / "flwr-home")
        env["HOME"] = str(self.site_home(name))  # caches of an unprivileged site stay in its folder
        return env

    def start_supernode(self, name: str, spec: SuperNodeSpec) -> Started:
        """Start one more SuperNode (own FLWR_HOME, like a separate hospital), and its gate."""
        env = self._node_env(name)
        user = next((h.user for h in self.hospitals if h.site_id == name), None)
        as_user = (
            ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--"]
            if user is not None
            else []
        )
        node = self.processes.start(name, [*as_user, *supernode_command(spec)], env)
        started = [node]
        if spec.approving:
            gate = [*as_user, *executor_command(spec)]
            started.append(self.processes.start(f"{name}-executor", gate, env))
        self.nodes[name] = (spec, started)
        return node

    def stop_supernode(self, name: str) -> None:
        """Stop one SuperNode and its gate (by their own process group ids)."""
        _, started = self.nodes[name]
        for entry in started:
            self.processes.stop(entry)

    def restart_supernode(self, name: str) -> Started:
        """Stop a hospital's SuperNode (and gate) by their process ids and start them again."""
        spec, _ = self.nodes[name]
        self.stop_supernode(name)
        node = self.start_supernode(name, spec)
        wait_until(
            lambda: online_nodes(self.env) == len(self.hospitals),
            self.start_timeout,
            f"{len(self.hospitals)} online SuperNodes after restarting {name}",
        )
        return node

    def run(
        self, app_dir: Path, run_config: Mapping[str, ConfigValue], timeout: float
    ) -> subprocess.CompletedProcess:
        """``flwr run APP medfed --stream --run-config …`` to completion."""
        return run(run_command(app_dir, CONNECTION, run_config), self.env, timeout)

    def start_run(self, name: str, app_dir: Path, run_config: Mapping[str, ConfigValue]) -> Started:
        """``flwr run APP medfed --stream --run-config …`` in the background (log: NAME.log)."""
        return self.processes.start(name, run_command(app_dir, CONNECTION, run_config), self.env)
