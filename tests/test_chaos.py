"""Chaos on a real deployment: hospitals and the coordinator are killed mid-run (issue 18).

Three hospitals (SuperNode + gate each, TLS + node auth, loopback only, ``min-sites`` 2) and
a SuperLink run a 4-round federation while the test plays the failures of a real network,
each with ``kill -9`` of exactly the process groups ``LocalFederation`` started:

1. hospital-a loses power while it trains round 2 and comes back at once (it must miss
   round 2 and train again in a later round, by itself);
2. the coordinator's SuperLink dies while round 3 trains; it is restarted with the same
   ``--database`` and the run is resumed the documented way (``run.resume=true
   run.run-dir=…``), the hospitals reconnecting by themselves;
3. hospital-b dies while it evaluates the resumed round 3, and stays down.

The moments are found in the SuperNodes' own logs (Flower's ``Receiving: train message``),
never by sleeping. Every wait is bounded (``medfed.testing.timing.scaled``). The run must
still finish all its rounds, name each killed site (by site name) in the round lines and the
report for the rounds it missed, and the report must say what happened in every round.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.data.synthetic import generate_site
from medfed.testing.federation import Hospital, LocalFederation, Started, online_nodes, wait_until
from medfed.testing.timing import scaled, timeout_scale
from server.console import round_line
from server.recorder import RoundRecord
from server.rundir import METRICS_FILE, REPORT_FILE
from tests.deploy_support import REPO_ROOT

pytestmark = pytest.mark.slow

SUPERLINK_PORT = 19140
NODE_PORTS = (19141, 19142, 19143)
SITES = ("hospital-a", "hospital-b", "hospital-c")
IMAGES_PER_SITE = 24
ROUNDS = 4
# The run's federation.round-timeout on a quiet 2-core machine (scaled like every wait here).
# A phase takes seconds there; a killed node is reported by the SuperLink once it misses its
# heartbeats (~60 s), so this bound only matters on a very busy machine.
ROUND_TIMEOUT_S = 180.0


def _run_config(runs_dir: Path) -> dict[str, object]:
    return {
        "federation.num-rounds": ROUNDS,
        "federation.num-sites": len(SITES),
        "federation.min-sites": 2,
        "federation.round-timeout": scaled(ROUND_TIMEOUT_S),
        "data.image-size": 32,
        "run.runs-dir": str(runs_dir),
        "run.name": "chaos",
    }


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("chaos")
    hospitals = [
        Hospital(
            site,
            generate_site(
                root / "data" / site, index, seed=0, num_images=IMAGES_PER_SITE, image_size=64
            ),
        )
        for index, site in enumerate(SITES)
    ]
    with LocalFederation(
        root / "federation", hospitals, SUPERLINK_PORT, NODE_PORTS, approved_apps=[REPO_ROOT]
    ) as federation:
        yield federation


def _node(federation: LocalFederation, site: str) -> Started:
    return federation.nodes[site][1][0]


def _receiving(kind: str) -> str:
    """What a SuperNode logs the moment it takes a task (flwr 1.42, ``start_client_internal``)."""
    return f"Receiving: {kind} message"


def _recorded(runs_dir: Path, rounds: int) -> Path | None:
    """The run directory once ``rounds`` rounds are in its metrics.jsonl."""
    found = sorted(runs_dir.glob("*-chaos"))
    return found[0] if found and len(_metrics(found[0])) >= rounds else None


def _wait_for_task(
    federation: LocalFederation,
    sites: tuple[str, ...],
    kind: str,
    after: dict[str, int],
    what: str,
    watch: Started,
) -> str:
    """Wait (bounded) until one of ``sites`` logs taking a ``kind`` task after its offset in
    ``after``; returns that site. ``watch`` (``flwr run``) must stay alive meanwhile: if it
    ends, the failure shows its output instead of a time-out."""
    taken: list[str] = []

    def seen() -> bool:
        if watch.process.poll() is not None:
            raise AssertionError(f"flwr run ended while waiting for {what}:\n{watch.tail(60)}")
        taken[:] = [
            site
            for site in sites
            if _receiving(kind) in _node(federation, site).output()[after[site] :]
        ]
        return bool(taken)

    _poll(seen, scaled(2 * ROUND_TIMEOUT_S), what)
    return taken[0]


def _offsets(federation: LocalFederation) -> dict[str, int]:
    return {site: len(_node(federation, site).output()) for site in SITES}


def _poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Like ``wait_until``, but every 0.1 s: a kill must land while the task still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _metrics(run_dir: Path) -> list[dict[str, object]]:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _round_lines(rounds: list[dict[str, object]]) -> dict[int, str]:
    """The ServerApp's one line per round, as it printed it (``server.console``).

    Rebuilt from metrics.jsonl: the ``flwr run --stream`` of the killed SuperLink never
    printed the lines its ServerApp logged last."""
    return {int(r["round"]): round_line(RoundRecord.from_json(r), ROUNDS) for r in rounds}  # type: ignore[call-overload]


def _finish(run: Started, what: str) -> str:
    try:
        run.process.wait(timeout=scaled(5 * ROUND_TIMEOUT_S))
    except Exception as error:  # subprocess.TimeoutExpired: show what the run printed
        raise AssertionError(f"{what} did not finish:\n{run.tail(80)}") from error
    output = run.output()
    assert run.process.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def chaos_run(federation: LocalFederation) -> dict[str, object]:
    runs_dir = federation.root / "runs"
    config = _run_config(runs_dir)
    site_a, site_b = _node(federation, "hospital-a"), _node(federation, "hospital-b")
    started_at = time.monotonic()
    first = federation.start_run("flwr-run-first", REPO_ROOT, config)

    # 1. hospital-a dies while it trains round 2, and is started again at once
    _poll(lambda: _recorded(runs_dir, 1) is not None, scaled(2 * ROUND_TIMEOUT_S), "round 1")
    offsets = _offsets(federation)
    _wait_for_task(federation, ("hospital-a",), "train", offsets, "round 2 at hospital-a", first)
    federation.kill_supernode("hospital-a")
    # the round whose training it missed: the one after those recorded (under load, maybe 3)
    killed_a_round = len(_metrics(_recorded(runs_dir, 1))) + 1  # type: ignore[arg-type]
    killed_a_in_time = "Sending: train message" not in site_a.output()[offsets["hospital-a"] :]
    federation.start_supernode_again("hospital-a")

    # 2. the SuperLink dies while round 3 trains (round 2 is in the checkpoint)
    _poll(lambda: _recorded(runs_dir, 2) is not None, scaled(2 * ROUND_TIMEOUT_S), "round 2")
    run_dir = _recorded(runs_dir, 2)
    assert run_dir is not None
    _wait_for_task(federation, SITES, "train", _offsets(federation), "round 3 training", first)
    federation.kill_superlink()
    federation.processes.stop(first)  # the CLI lost its SuperLink: end it (by its pid)
    first_output = first.output()
    federation.start_superlink()  # same --database: registrations and run history survive
    wait_until(
        lambda: online_nodes(federation.env) == len(SITES),
        scaled(ROUND_TIMEOUT_S),
        "the hospitals to reconnect to the restarted SuperLink",
    )

    # 3. resume the run; hospital-b dies while it evaluates the resumed round 3
    offsets = _offsets(federation)
    resumed = federation.start_run(
        "flwr-run-resume",
        REPO_ROOT,
        {**config, "run.resume": True, "run.run-dir": str(run_dir)},
    )
    try:
        _wait_for_task(
            federation, ("hospital-b",), "evaluate", offsets, "round 3's evaluation", resumed
        )
        federation.kill_supernode("hospital-b")
        killed_b_round = len(_metrics(run_dir)) + 1  # evaluation comes before its record
        sent = site_b.output()[offsets["hospital-b"] :]
        killed_b = "" if "Sending: evaluate message" not in sent else "it replied before the kill"
    except TimeoutError as error:  # let the run end; the tests then say what went wrong
        killed_b, killed_b_round = f"not killed: {error}", 0
    resumed_output = _finish(resumed, "the resumed run")
    return {
        "run_dir": run_dir,
        "first": first_output,
        "resumed": resumed_output,
        "killed_a_in_time": killed_a_in_time,
        "killed_a_round": killed_a_round,
        "killed_b": killed_b,
        "killed_b_round": killed_b_round,
        "wall_s": time.monotonic() - started_at,
    }


def _rounds(chaos_run: dict[str, object]) -> tuple[list[dict[str, object]], dict[int, str]]:
    run_dir = chaos_run["run_dir"]
    assert isinstance(run_dir, Path)
    rounds = _metrics(run_dir)
    return rounds, _round_lines(rounds)


def _named_as_missing(site: str, line: str) -> bool:
    """Whether a round line names ``site`` other than among the sites that trained."""
    return site in re.sub(r"  sites \d+ \[[^\]]*\]", "", line)


def test_the_run_finishes_all_its_rounds(chaos_run: dict[str, object]) -> None:
    rounds, lines = _rounds(chaos_run)
    # shown with -s: the closing note's round lines and the wall time
    print("\n" + "\n".join(lines[k] for k in sorted(lines)))
    print(f"chaos run: {chaos_run['wall_s']:.0f} s, timeouts x{timeout_scale():.2f}")

    assert chaos_run["killed_a_in_time"], "hospital-a replied before the kill landed"
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1)), lines
    assert "Resuming" in str(chaos_run["resumed"])
    elapsed = [float(r["elapsed_s"]) for r in rounds]  # type: ignore[arg-type]
    assert elapsed == sorted(elapsed), elapsed  # the clock went on after the resume


def test_a_site_killed_while_training_is_named_once_and_rejoins(
    chaos_run: dict[str, object],
) -> None:
    rounds, lines = _rounds(chaos_run)
    k = int(chaos_run["killed_a_round"])  # type: ignore[call-overload]
    assert "hospital-a" not in rounds[k - 1]["train_sites"], lines[k]  # type: ignore[operator]
    assert "hospital-a" in rounds[k - 1]["failed"], lines[k]  # type: ignore[operator]
    assert _named_as_missing("hospital-a", lines[k]), lines[k]
    assert rounds[k - 1]["aggregated"], lines[k]  # 2 of 3 replies >= min-sites
    assert "node " not in lines[k], lines[k]  # by site name only, once
    # it came back by itself and trained again
    assert any("hospital-a" in r["train_sites"] for r in rounds[k:]), lines  # type: ignore[operator]


def test_a_site_killed_while_evaluating_is_named(chaos_run: dict[str, object]) -> None:
    rounds, lines = _rounds(chaos_run)
    assert not chaos_run["killed_b"], chaos_run["killed_b"]
    k = int(chaos_run["killed_b_round"])  # type: ignore[call-overload]
    assert "hospital-b" not in rounds[k - 1]["eval_sites"], lines[k]  # type: ignore[operator]
    assert _named_as_missing("hospital-b", lines[k]), lines[k]  # the evaluation it missed
    for number in range(k + 1, ROUNDS + 1):  # still down: named as offline
        assert "hospital-b" not in rounds[number - 1]["train_sites"], lines[number]  # type: ignore[operator]
        assert _named_as_missing("hospital-b", lines[number]), lines[number]
    for number in range(k, ROUNDS + 1):
        assert "node " not in lines[number], lines[number]


def test_the_rounds_after_the_resume_still_aggregate(chaos_run: dict[str, object]) -> None:
    rounds, lines = _rounds(chaos_run)
    resumed_after = int(str(chaos_run["resumed"]).split(" after round ", 1)[1].split("/", 1)[0])
    for number in range(resumed_after + 1, ROUNDS + 1):
        assert rounds[number - 1]["aggregated"], lines[number]
        assert len(rounds[number - 1]["train_sites"]) >= 2, lines[number]  # type: ignore[arg-type]


def test_the_report_says_what_happened_in_each_round(chaos_run: dict[str, object]) -> None:
    run_dir = chaos_run["run_dir"]
    assert isinstance(run_dir, Path)
    report = (run_dir / REPORT_FILE).read_text()
    # "Sites that declined, failed or were rejected": round, site, what, why
    events = {
        (int(number), site): kind
        for number, site, kind in re.findall(
            r'<tr><td>(\d+)</td><td class="text">([^<]+)</td><td class="text kind-([\w-]+)">',
            report,
        )
    }
    killed_a, killed_b = chaos_run["killed_a_round"], chaos_run["killed_b_round"]
    assert events.get((killed_a, "hospital-a")) == "failed", events
    assert events.get((killed_b, "hospital-b")) == "not-evaluated", events
    for number in range(int(killed_b) + 1, ROUNDS + 1):  # type: ignore[call-overload]
        assert events.get((number, "hospital-b")) == "failed", events  # offline
    resumed = [number for (number, site), kind in events.items() if kind == "resumed"]
    assert len(resumed) == 1, events
    assert not [site for _, site in events if site.startswith("node ")], events
