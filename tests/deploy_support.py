"""Helpers for the deployment tests: real Flower processes on 127.0.0.1 and canary hospitals.

Every process is started in its own session (process group) and stopped by that id, so a
test stops exactly what it started (Flower's SuperExec and app processes are children that
also exit with their parent). Logs go to files next to the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from common.data.synthetic import generate_site

REPO_ROOT = Path(__file__).resolve().parents[1]
CANARY_PATIENT = "ZZCANARY^QUENTIN^XK7"
CANARY_PATIENT_ID = "CANARY-7731-ID"
CANARY_BLOCK = 24  # pixels: a checkerboard block in the top-left corner of every image


def flwr_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower processes: private FLWR_HOME, venv tools on PATH, no uv sync."""
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Started:
    """One started process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Processes:
    """Starts processes in their own process group and stops exactly those."""

    log_dir: Path
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Started:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                list(argv),
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.log_dir,
                start_new_session=True,
            )
        entry = Started(name, process, log)
        self.started.append(entry)
        return entry

    def stop(self, entry: Started, timeout: float = 15.0) -> None:
        if entry.process.poll() is None:
            try:
                os.killpg(entry.process.pid, signal.SIGTERM)
                entry.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(entry.process.pid, signal.SIGKILL)
                entry.process.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        self._kill_leftover_group(entry.process.pid)

    @staticmethod
    def _kill_leftover_group(pgid: int) -> None:
        """Children that outlived the leader (same process group) are stopped too."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def stop_all(self) -> None:
        for entry in reversed(self.started):
            self.stop(entry)


def run(argv: Sequence[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a short command (``flwr …``) to completion, capturing its output."""
    return subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> None:
    """Poll ``condition`` until true; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def online_nodes(connection: str, env: dict[str, str]) -> int:
    """How many SuperNodes the SuperLink lists as online (via ``flwr supernode ls``)."""
    result = run(["flwr", "supernode", "ls", connection, "--format", "json"], env, 30)
    try:
        nodes = json.loads(result.stdout).get("nodes", [])
    except json.JSONDecodeError:
        return 0
    return sum(1 for node in nodes if node.get("status") == "online")


def canary_pattern(size: int = CANARY_BLOCK) -> np.ndarray:
    """The checkerboard (0/1) stamped into every canary image."""
    return (np.indices((size, size)).sum(axis=0) % 2).astype(np.float32)


def make_canary_site(directory: Path, index: int, num_images: int) -> Path:
    """A synthetic hospital whose images carry a canary block and whose tags a fake name."""
    generate_site(directory, index, seed=0, num_images=num_images, image_size=64)
    pattern = canary_pattern()
    for path in sorted(directory.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.copy()
        top = int(np.iinfo(pixels.dtype).max if ds.BitsStored == 16 else 4095)
        pixels[:CANARY_BLOCK, :CANARY_BLOCK] = (pattern * min(top, 4095)).astype(pixels.dtype)
        ds.PixelData = pixels.tobytes()
        ds.PatientName = CANARY_PATIENT
        ds.PatientID = CANARY_PATIENT_ID
        ds.save_as(path, enforce_file_format=True)
    return directory
