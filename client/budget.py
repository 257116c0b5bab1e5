"""A site's privacy budget: decide before each round whether to train, record after it.

Two caps, both checked against the spend *after* the planned round (``RoundPlan``):
- the run's ``privacy.target-epsilon`` (the noise is calibrated to reach it exactly at the
  last planned round, so a run that asks for extra rounds is refused them; a site whose
  history is not the plan's - a round redone after a resume, rounds missed while down -
  re-plans the remaining rounds' noise from its ledger, ``common.planning``);
- the site's own lifetime budget, node-config ``epsilon-budget``, over every run recorded
  in its state directory (a server cannot raise it). A site with such a budget also refuses
  a run with DP switched off.
A refused round is a *decline*, not an error: the site replies with ``train-status`` =
``STATUS_DECLINED_BUDGET`` and zero examples, and the server carries on without it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from client.privacy_state import (
    PrivacyLedgerStore,
    claim_state_dir,
    ledger_key_of,
    site_budget_of,
    state_dir_for,
)
from common.config import MedfedConfig, PrivacyConfig
from common.ledger import GENESIS, LedgerRecord
from common.planning import RoundPlan
from common.privacy import (
    BudgetCheck,
    HistoryEntry,
    check_budget,
    epsilon_of,
    merge_history,
    noise_multiplier_after,
    noise_multiplier_for,
)


@dataclass(frozen=True)
class SitePrivacy:
    """One site's privacy bookkeeping for one run (its ledger is the state)."""

    store: PrivacyLedgerStore
    run_key: str
    privacy: PrivacyConfig
    site_budget: float | None

    @classmethod
    def open(
        cls,
        node_config: Mapping[str, object],
        config: MedfedConfig,
        site_id: str,
        run_key: str,
    ) -> SitePrivacy:
        """The ledger and budget of the site named ``site_id`` (``ConfigError`` if its state
        directory is another site's: ``claim_state_dir``)."""
        directory = state_dir_for(node_config, config, site_id)
        claim_state_dir(directory, site_id)
        store = PrivacyLedgerStore(directory, ledger_key_of(node_config))
        return cls(store, run_key, config.privacy, site_budget_of(node_config))

    def history(self) -> list[HistoryEntry]:
        """This run's accountant history so far (folded from the ledger)."""
        spend = self.store.run(self.run_key)
        return list(spend.history) if spend is not None else []

    def calibrate(
        self,
        *,
        target_epsilon: float,
        delta: float,
        sample_rate: float,
        steps: int,
        accountant: str,
        prior: Sequence[HistoryEntry] = (),
    ) -> float:
        """``noise_multiplier_for``, remembered for this run beside the ledger."""
        key = f"{accountant}:eps={target_epsilon!r}:delta={delta!r}:q={sample_rate!r}:T={steps}"
        if prior:
            key += f":prior={[tuple(entry) for entry in prior]!r}"
        known = self.store.calibrations(self.run_key)
        if key in known:
            return known[key]
        noise = noise_multiplier_for(
            target_epsilon=target_epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
            prior=prior,
        )
        self.store.remember_calibration(self.run_key, key, noise)
        return noise

    def replan(
        self,
        *,
        history: Sequence[HistoryEntry],
        target_epsilon: float,
        delta: float,
        sample_rate: float,
        steps: int,
        accountant: str,
        candidate: float | None = None,
    ) -> float | None:
        """``noise_multiplier_after`` (the remaining rounds' noise given the run's history),
        remembered for this run beside the ledger, keyed by everything it depends on."""
        recorded = json.dumps([[float(n), float(q), int(s)] for n, q, s in history])
        key = (
            f"replan:{accountant}:eps={target_epsilon!r}:delta={delta!r}:q={sample_rate!r}"
            f":T={steps}:from={candidate!r}:H={hashlib.sha256(recorded.encode()).hexdigest()}"
        )
        known = self.store.calibrations(self.run_key)
        if key in known:
            return known[key]
        noise = noise_multiplier_after(
            history,
            target_epsilon=target_epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
            candidate=candidate,
        )
        if noise is not None:  # nothing left is not cached: the check is cheap and declines
            self.store.remember_calibration(self.run_key, key, noise)
        return noise

    def spent(self) -> float:
        """This run's epsilon so far."""
        return epsilon_of(
            self.history(), delta=self.privacy.delta, accountant=self.privacy.accountant
        )

    def check(self, plan: RoundPlan, pending: Sequence[HistoryEntry] = ()) -> BudgetCheck:
        """May the site take the planned round (after ``pending`` spend not yet in the
        ledger: an on-site generator trained just before it, ``client.augment``)?"""
        if not self.privacy.enabled:
            if self.site_budget is None:
                return BudgetCheck(True, 0.0, math.nan)
            return BudgetCheck(
                False,
                0.0,
                math.nan,
                f"the run has DP switched off and the site has an epsilon budget "
                f"({self.site_budget:g})",
            )
        return check_budget(
            run_history=merge_history(self.history(), pending),
            other_runs=self.store.other_runs(self.run_key),
            next_round=plan.history_entry(),
            delta=self.privacy.delta,
            accountant=self.privacy.accountant,
            run_budget=self.privacy.target_epsilon,
            site_budget=self.site_budget,
        )

    def record(self, *, server_round: int, entry: HistoryEntry, update_sha256: str) -> LedgerRecord:
        """Sign and append this round's spend (call before the reply leaves the site).

        The record's epsilon is the run's epsilon with this round, accounted from the
        ledger's history exactly as ``medfed privacy verify`` recomputes it.
        """
        noise, rate, steps = entry
        history = merge_history(self.history(), [entry])
        epsilon = epsilon_of(history, delta=self.privacy.delta, accountant=self.privacy.accountant)
        record = LedgerRecord(
            run_key=self.run_key,
            round=server_round,
            sample_rate=rate,
            noise_multiplier=noise,
            steps=steps,
            accountant=self.privacy.accountant,
            epsilon=epsilon,
            delta=self.privacy.delta,
            update_sha256=update_sha256,
            prev_hash=GENESIS,  # chained to the ledger's last record when appended
            recorded_at=int(time.time()),
        )
        return self.store.append(record)
