"""A hospital runs only the app it approved, under its own privacy policy (real processes).

A SuperLink (TLS + node auth) behind the Fleet-only gateway, two SuperNodes started the
medfed way (``--isolation process`` + ``medfed site executor``, the site's gate), on
127.0.0.1. Both sites approved the installed medfed release. hospital-a's node config caps
epsilon per run at 4; hospital-b allows runs without DP and runs as an unprivileged user
(``nobody`` when the suite runs as root) from its own folder: its SuperNode, gate and
ClientApp never have root's rights. Checked, in order:
1. the approved app trains 2 rounds at both sites and writes the run directory;
2. the same app with one extra line in its client code (writing a marker and listing the
   data folders) is refused at both sites before any of its code runs: no marker, both
   sites named as declined with the not-approved reason, no traceback at the sites;
3. a run whose epsilon exceeds hospital-a's cap is declined there by policy and trained at
   hospital-b (after restarting hospital-a's SuperNode and gate: approvals survive);
4. after hospital-a revokes the app, its next task is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.approvals import ApprovalStore, release_hash
from common.data.synthetic import generate_site
from common.keys import NOT_APPROVED
from medfed.testing.federation import Hospital, LocalFederation
from medfed.testing.timing import scaled
from server.rundir import METRICS_FILE, REPORT_FILE
from tests.deploy_support import REPO_ROOT
from tests.test_gateway import _require_nginx

pytestmark = pytest.mark.slow

SUPERLINK_PORT = 19130
GATEWAY_PORT = 19131
NODE_PORTS = (19132, 19133)
SITES = ("hospital-a", "hospital-b")
RUN_TIMEOUT = 240.0


def _modified_app(target: Path, marker: Path, data_folders: list[Path]) -> Path:
    """The medfed app as ``flwr run`` would ship it, plus one line in the client code."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    with open(target / "client" / "app.py", "a") as handle:
        folders = ", ".join(repr(str(folder)) for folder in data_folders)
        handle.write(
            f"\nimport os as _o; open({str(marker)!r}, 'w').write(repr([_o.listdir(f) "
            f"for f in ({folders},)]))\n"
        )
    return target


# hospital-b's user: an unprivileged one (as root: nobody; otherwise we already are one)
UNPRIVILEGED = (65534, 65534) if os.geteuid() == 0 else None


@pytest.fixture(scope="module")
def federation() -> Iterator[LocalFederation]:
    _require_nginx()
    # not under pytest's private (0700) temporary folder: hospital-b's user must reach it
    root = Path(tempfile.mkdtemp(prefix="medfed-approval-"))
    root.chmod(0o755)
    policies = ({"max-epsilon": 4.0}, {"require-dp": False})
    users = (None, UNPRIVILEGED)
    hospitals = [
        Hospital(
            site,
            generate_site(root / "data" / site, i, seed=0, num_images=24, image_size=64),
            policies[i],
            users[i],
        )
        for i, site in enumerate(SITES)
    ]
    try:
        with LocalFederation(
            root / "federation",
            hospitals,
            SUPERLINK_PORT,
            NODE_PORTS,
            gateway_port=GATEWAY_PORT,
            approved_apps=[REPO_ROOT],
        ) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for process {pid}")


def _run(federation: LocalFederation, app: Path, name: str, **settings: object) -> Path:
    runs_dir = federation.root / "runs"
    config = {"run.runs-dir": str(runs_dir), "run.name": name, **settings}
    result = federation.run(app, config, timeout=scaled(RUN_TIMEOUT))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    (run_dir,) = runs_dir.glob(f"*-{name}")
    return run_dir


def _rounds(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]


def _gate_logs(federation: LocalFederation) -> str:
    return "".join(
        (federation.root / f"{site}-executor.log").read_text(errors="replace") for site in SITES
    )


def test_a_site_runs_only_the_app_it_approved_under_its_own_policy(
    federation: LocalFederation, tmp_path: Path
) -> None:
    approved = release_hash(REPO_ROOT)

    # 1. The approved app trains 2 rounds at both sites
    run_dir = _run(
        federation,
        REPO_ROOT,
        "approved",
        **{"federation.num-rounds": 2, "privacy.target-epsilon": 2.0},
    )
    rounds = _rounds(run_dir)
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[-1]["train_sites"] == list(SITES)
    assert (run_dir / REPORT_FILE).is_file()
    # hospital-b's SuperNode and gate run unprivileged, and so did its ClientApp: the privacy
    # state it booked and the app it installed belong to that user
    expected_uid = UNPRIVILEGED[0] if UNPRIVILEGED else os.geteuid()
    _, started = federation.nodes["hospital-b"]
    assert {_uid_of(entry.process.pid) for entry in started} == {expected_uid}
    site_home = federation.site_home("hospital-b")
    assert (site_home / "state" / "privacy-ledger.jsonl").stat().st_uid == expected_uid
    installed = list((site_home / "flwr-home" / "apps").iterdir())
    assert installed and all(path.stat().st_uid == expected_uid for path in installed)
    # each site read its data once for the 4 tasks of 2 rounds: the gate's warm process kept
    # it (counted in Flower's console format; Flower also mirrors lines into its log capture)
    for site in SITES:
        log = (federation.root / f"{site}-executor.log").read_text(errors="replace")
        assert len(re.findall(rf"INFO[^:\n]*:\s+site '{site}': loaded ", log)) == 1, site

    # 2. A modified app is refused at both sites before any of its code runs
    marker = tmp_path / "marker"
    data_folders = [hospital.data_path for hospital in federation.hospitals]
    modified = _modified_app(tmp_path / "modified-app", marker, data_folders)
    modified_hash = release_hash(modified)
    assert modified_hash != approved
    run_dir = _run(federation, modified, "modified", **{"federation.num-rounds": 1})
    assert not marker.exists()
    (line,) = _rounds(run_dir)
    assert line["train_sites"] == [] and line["declined_sites"] == list(SITES)
    assert set(line["declined"].values()) == {"app not approved"}
    report = (run_dir / REPORT_FILE).read_text()
    assert "app not approved" in report
    gate_logs = _gate_logs(federation)
    assert f"{NOT_APPROVED}: {modified_hash}" in gate_logs
    assert "Traceback" not in gate_logs
    for site in SITES:  # kept for review, never installed
        assert (federation.state_dir(site) / "apps" / f"{modified_hash}.fab").is_file()

    # 3. Policy: epsilon above hospital-a's cap; approvals survive a SuperNode restart
    federation.restart_supernode("hospital-a")
    run_dir = _run(
        federation,
        REPO_ROOT,
        "policy",
        **{"federation.num-rounds": 1, "privacy.target-epsilon": 8.0},
    )
    (line,) = _rounds(run_dir)
    assert line["train_sites"] == ["hospital-b"]
    assert line["declined"] == {"hospital-a": "site policy"}

    # 4. A revoked app is refused on the next task
    assert ApprovalStore(federation.state_dir("hospital-a")).revoke(approved)
    run_dir = _run(
        federation,
        REPO_ROOT,
        "revoked",
        **{"federation.num-rounds": 1, "privacy.target-epsilon": 2.0},
    )
    (line,) = _rounds(run_dir)
    assert line["train_sites"] == ["hospital-b"]
    assert line["declined"] == {"hospital-a": "app not approved"}
