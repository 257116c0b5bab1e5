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
from medfed.testing.timing import scaled
from server.rundir import METRICS_FILE, REPORT_FILE
from tests.deploy_support import REPO_ROOT

pytestmark = pytest.mark.slow

SUPERLINK_PORT = 19130
NODE_PORTS = (19131, 19132, 19133)
SITES = ("hospital-a", "hospital-b", "hospital-c")
IMAGES_PER_SITE = 24
ROUNDS = 4
# what one phase of a round needs at most on a quiet 2-core machine (rounds take seconds)
PHASE_TIMEOUT_S = 45.0


def _run_config(runs_dir: Path) -> dict[str, object]:
    return {
        "federation.num-rounds": ROUNDS,
        "federation.num-sites": len(SITES),
        "federation.min-sites": 2,
        "federation.round-timeout": scaled(PHASE_TIMEOUT_S),
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


def _received(kind: str, round_label: str | None = None) -> re.Pattern[str]:
    """A SuperNode's log lines for a task it just took: ``[RUN r, ROUND k]`` then
    ``Receiving: <kind> message`` (``round_label`` None: any round)."""
    label = r"\d+" if round_label is None else re.escape(round_label)
    return re.compile(rf"ROUND {label}\][^\n]*\n[^\n]*Receiving: {kind} message")


def _wait_in_log(
    entry: Started,
    pattern: re.Pattern[str],
    what: str,
    *,
    after: int = 0,
    watch: Started | None = None,
) -> None:
    """Wait (bounded) until ``entry``'s log, from byte ``after`` on, matches ``pattern``.

    ``watch`` (the ``flwr run`` process) must stay alive meanwhile: if it ends, the
    failure shows its output instead of a time-out."""

    def seen() -> bool:
        if watch is not None and watch.process.poll() is not None:
            raise AssertionError(f"flwr run ended while waiting for {what}:\n{watch.tail(60)}")
        return bool(pattern.search(entry.output()[after:]))

    _poll(seen, scaled(4 * PHASE_TIMEOUT_S), what)


def _poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Like ``wait_until``, but every 0.1 s: a kill must land while the task still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _sent_after(entry: Started, kind: str, after: int) -> bool:
    return f"Sending: {kind} message" in entry.output()[after:]


def _metrics(run_dir: Path) -> list[dict[str, object]]:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _round_lines(*logs: str) -> dict[int, str]:
    """The ServerApp's one line per round (``round k/N …``), the latest for each round."""
    lines: dict[int, str] = {}
    for text in logs:
        for match in re.finditer(rf"^.*?(round (\d+)/{ROUNDS}\s.*)$", text, re.MULTILINE):
            lines[int(match.group(2))] = match.group(1).strip()
    return lines


def _finish(run: Started, what: str) -> str:
    try:
        run.process.wait(timeout=scaled(8 * PHASE_TIMEOUT_S))
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
    first = federation.start_run("flwr-run-first", REPO_ROOT, config)

    # 1. hospital-a dies while it trains round 2, and is started again at once
    _wait_in_log(site_a, _received("train", "2"), "hospital-a training round 2", watch=first)
    a_offset = len(site_a.output())
    federation.kill_supernode("hospital-a")
    killed_a_in_time = not _sent_after(site_a, "train", a_offset)
    site_a = federation.start_supernode_again("hospital-a")

    # 2. the SuperLink dies while round 3 trains (round 2 is in the checkpoint)
    run_dirs: list[Path] = []

    def round_two_recorded() -> bool:
        run_dirs[:] = sorted(runs_dir.glob("*-chaos"))
        return bool(run_dirs) and len(_metrics(run_dirs[0])) >= 2

    _poll(round_two_recorded, scaled(6 * PHASE_TIMEOUT_S), "round 2 in metrics.jsonl")
    run_dir = run_dirs[0]
    offsets = {site: len(_node(federation, site).output()) for site in SITES}

    def round_three_training() -> bool:
        return any(
            _received("train", "3").search(_node(federation, site).output()[offsets[site] :])
            for site in SITES
        )

    _poll(round_three_training, scaled(4 * PHASE_TIMEOUT_S), "round 3 training")
    federation.kill_superlink()
    federation.processes.stop(first)  # the CLI lost its SuperLink: end it (by its pid)
    first_output = first.output()
    federation.start_superlink()  # same --database: registrations and run history survive
    wait_until(
        lambda: online_nodes(federation.env) == len(SITES),
        scaled(4 * PHASE_TIMEOUT_S),
        "the hospitals to reconnect to the restarted SuperLink",
    )

    # 3. resume the run; hospital-b dies while it evaluates the resumed round 3
    b_offset = len(site_b.output())
    resumed = federation.start_run(
        "flwr-run-resume",
        REPO_ROOT,
        {**config, "run.resume": True, "run.run-dir": str(run_dir)},
    )
    _wait_in_log(
        site_b,
        _received("evaluate"),
        "hospital-b evaluating after the resume",
        after=b_offset,
        watch=resumed,
    )
    b_eval_offset = len(site_b.output())
    federation.kill_supernode("hospital-b")
    killed_b_in_time = not _sent_after(site_b, "evaluate", b_eval_offset)
    resumed_output = _finish(resumed, "the resumed run")
    return {
        "run_dir": run_dir,
        "first": first_output,
        "resumed": resumed_output,
        "killed_a_in_time": killed_a_in_time,
        "killed_b_in_time": killed_b_in_time,
    }


def test_the_run_finishes_all_rounds_despite_the_kills(chaos_run: dict[str, object]) -> None:
    run_dir = chaos_run["run_dir"]
    assert isinstance(run_dir, Path)
    rounds = _metrics(run_dir)
    lines = _round_lines(str(chaos_run["first"]), str(chaos_run["resumed"]))
    print("\n".join(lines[k] for k in sorted(lines)))  # shown with -s: the closing note's lines

    assert chaos_run["killed_a_in_time"], "hospital-a replied before the kill landed"
    assert chaos_run["killed_b_in_time"], "hospital-b replied before the kill landed"
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert sorted(lines) == list(range(1, ROUNDS + 1)), lines
    assert "Resuming" in str(chaos_run["resumed"])
    elapsed = [float(r["elapsed_s"]) for r in rounds]  # type: ignore[arg-type]
    assert elapsed == sorted(elapsed), elapsed  # the clock went on after the resume

    # round 2: hospital-a was killed while training: named once, by site name
    assert "hospital-a" not in rounds[1]["train_sites"]  # type: ignore[operator]
    assert "hospital-a" in rounds[1]["failed"]  # type: ignore[operator]
    assert "hospital-a" in lines[2] and "node " not in lines[2]
    assert rounds[1]["aggregated"], lines[2]  # 2 of 3 replies >= min-sites
    # it came back by itself and trained again
    assert any("hospital-a" in r["train_sites"] for r in rounds[2:]), lines  # type: ignore[operator]

    # round 3 (resumed): hospital-b was killed while evaluating; round 4: it is down
    assert "hospital-b" not in rounds[2]["eval_sites"]  # type: ignore[operator]
    assert "hospital-b" in lines[3], lines[3]
    assert "hospital-b" not in rounds[3]["train_sites"]  # type: ignore[operator]
    assert "hospital-b" in lines[4], lines[4]
    for number in (3, 4):
        assert rounds[number - 1]["aggregated"], lines[number]
        assert len(rounds[number - 1]["train_sites"]) >= 2, lines[number]  # type: ignore[arg-type]


def test_the_report_says_what_happened_in_each_round(chaos_run: dict[str, object]) -> None:
    run_dir = chaos_run["run_dir"]
    assert isinstance(run_dir, Path)
    report = (run_dir / REPORT_FILE).read_text()
    # the events table: one row per missed round, naming the site
    events = re.findall(r"<tr[^>]*>(.*?)</tr>", report, re.DOTALL)
    text = [re.sub(r"<[^>]+>", " ", row) for row in events]
    assert any("hospital-a" in row and re.search(r"\b2\b", row) for row in text), text
    assert any("hospital-b" in row and re.search(r"\b3\b", row) for row in text), text
    assert any("hospital-b" in row and re.search(r"\b4\b", row) for row in text), text
