"""What ``medfed privacy`` prints: the plan table, a ledger's verdict, a site's spend.

Computation lives in ``common.planning`` (the sites' own planning code) and
``common.ledger``; this module turns results into rich tables or JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, track
from rich.table import Table

from client.privacy_state import LEDGER_KEY_FILE
from common.config import MedfedConfig, Scalar
from common.errors import ConfigError
from common.ledger import (
    LEDGER_FILE,
    LedgerError,
    LedgerRecord,
    Problem,
    RunSpend,
    check_against,
    check_chain,
    check_epsilons,
    read_ledger,
    run_spends,
)
from common.planning import RoundPlan, plan_round, projected_epsilons
from common.privacy import epsilon_of
from common.signing import load_public_key, public_key_path


@dataclass(frozen=True)
class PlanProjection:
    """A run's plan at one site and the epsilon it reaches after each round."""

    config: MedfedConfig
    site_size: int
    plan: RoundPlan
    epsilons: list[tuple[int, float]]

    def to_json(self) -> dict[str, object]:
        """JSON-safe summary."""
        privacy = self.config.privacy
        return {
            "site_size": self.site_size,
            "accountant": privacy.accountant,
            "delta": privacy.delta,
            "target_epsilon": privacy.target_epsilon,
            "batch_size": self.plan.batch_size,
            "sample_rate": self.plan.sample_rate,
            "steps_per_round": self.plan.steps,
            "noise_multiplier": self.plan.noise_multiplier,
            "rounds": [{"round": r, "epsilon": e} for r, e in self.epsilons],
        }


def project_plan(overrides: Mapping[str, Scalar], site_size: int) -> PlanProjection:
    """Plan a round as a site with ``site_size`` examples would, and project every round."""
    if site_size < 1:
        raise ConfigError(f"--site-size must be at least 1, got {site_size}")
    config = MedfedConfig().replace(**overrides)
    rounds = config.federation.num_rounds
    plan = plan_round(site_size, config.train, config.privacy, planned_rounds=rounds)
    epsilons = list(
        track(
            projected_epsilons(plan, rounds, config.privacy),
            total=rounds,
            description="accounting",
            transient=True,
            console=Console(stderr=True),
        )
    )
    return PlanProjection(config, site_size, plan, epsilons)


def print_plan(projection: PlanProjection, *, as_json: bool = False) -> None:
    """The plan as a rich table (or JSON)."""
    if as_json:
        print(json.dumps(projection.to_json(), indent=2))
        return
    plan, privacy = projection.plan, projection.config.privacy
    console = Console()
    console.print(
        f"site of {projection.site_size} examples: batch {plan.batch_size}, "
        f"sample rate {plan.sample_rate:.4g}, {plan.steps} steps per round, "
        f"noise multiplier {plan.noise_multiplier:.4f} "
        f"({privacy.accountant}, δ={privacy.delta:g}, target ε={privacy.target_epsilon:g})"
    )
    table = Table(title="projected ε after each round")
    table.add_column("round", justify="right")
    table.add_column("steps so far", justify="right")
    table.add_column("ε", justify="right")
    table.add_column("within target", justify="center")
    for done, epsilon in projection.epsilons:
        within = "yes" if epsilon <= privacy.target_epsilon else "[red]no[/red]"
        table.add_row(str(done), str(done * plan.steps), f"{epsilon:.4f}", within)
    console.print(table)


def verify_ledger_file(
    ledger: Path, public_key: Path, attestations: Path | None = None
) -> tuple[list[LedgerRecord | None], list[Problem]]:
    """Every problem with a ledger: chain, signatures, epsilon, and the coordinator's copies."""
    key = load_public_key(public_key)
    if not ledger.is_file():
        raise LedgerError(f"{ledger} is not a file")
    records = read_ledger(ledger)
    problems = check_chain(records, key)
    if attestations is not None:
        if not attestations.is_file():
            raise LedgerError(f"{attestations} is not a file")
        problems += check_against(records, read_ledger(attestations))
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("recomputing ε", total=len(records))
        problems += check_epsilons(records, on_record=lambda: progress.advance(task))
    return records, sorted(problems, key=lambda p: p.line)


def print_verification(ledger: Path, public_key: Path, attestations: Path | None = None) -> int:
    """Print the verdict on a ledger: 0 valid, 1 invalid (problems named)."""
    records, problems = verify_ledger_file(ledger, public_key, attestations)
    console = Console()
    readable = [r for r in records if r is not None]
    _print_runs(console, run_spends(readable), f"{ledger}")
    if problems:
        console.print(f"[red]INVALID[/red]: {len(problems)} problem(s) in {ledger}")
        for problem in problems:
            console.print(f"  {problem.kind}: {problem.message}", markup=False)
        unsigned = {p.line for p in problems if p.kind == "edited"}
        if readable and unsigned >= set(range(1, len(records) + 1)):
            console.print(f"no record matches {public_key}: is it this site's ledger key?")
        return 1
    checked = "chain, signatures and ε of every record"
    if attestations is not None:
        checked += f", and every copy in {attestations}"
    console.print(f"[green]VALID[/green]: {len(readable)} record(s); checked {checked}")
    return 0


def print_spend(state_dir: Path) -> None:
    """A site's spend per run and in total, read from its ledger (not verified here)."""
    path = state_dir / LEDGER_FILE
    if not path.is_file():
        raise LedgerError(f"no privacy ledger in {state_dir} ({LEDGER_FILE}): nothing recorded")
    records = [r for r in read_ledger(path) if r is not None]
    runs = run_spends(records)
    console = Console()
    _print_runs(console, runs, str(path))
    if records:
        last = records[-1]
        total = epsilon_of(
            [entry for spend in runs.values() for entry in spend.history],
            delta=last.delta,
            accountant=last.accountant,
        )
        console.print(
            f"all {len(runs)} run(s) composed: ε = {total:.4f} "
            f"({last.accountant}, δ={last.delta:g}, as the site's epsilon-budget counts it)"
        )
    local_key = public_key_path(state_dir / LEDGER_KEY_FILE)
    key = local_key if local_key.is_file() else "<node config ledger-key>.pub"
    console.print(
        f"check it: medfed privacy verify {path} --public-key {key}", markup=False, soft_wrap=True
    )


def _print_runs(console: Console, runs: Mapping[str, RunSpend], source: str) -> None:
    table = Table(title=f"privacy spent per run ({source})")
    table.add_column("run")
    table.add_column("rounds", justify="right")
    table.add_column("steps", justify="right")
    table.add_column("accountant")
    table.add_column("δ", justify="right")
    table.add_column("ε", justify="right")
    for run, spend in runs.items():
        table.add_row(
            run,
            str(spend.rounds),
            str(sum(steps for _, _, steps in spend.history)),
            spend.accountant,
            f"{spend.delta:g}",
            f"{spend.epsilon:.4f}",
        )
    console.print(table)
    for run, spend in runs.items():
        for number in dict.fromkeys(spend.redone):
            times = 1 + spend.redone.count(number)
            console.print(
                f"run {run}: round {number} redone after a resume (trained {times} times; "
                "every time counts in its ε)",
                markup=False,
            )
