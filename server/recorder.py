"""Per-round bookkeeping on the server, plugged into Flower's strategy as functions.

Flower's ``FedAvg`` accepts ``train_metrics_aggr_fn`` / ``evaluate_metrics_aggr_fn`` and calls
``evaluate_fn(round, arrays)`` once a round is complete. ``RoundRecorder`` provides all three:
it keeps each site's reply metrics, aggregates them (epsilon as a *maximum*, never a weighted
mean; the sites' threshold-grid counts summed into the exact pooled ROC, the operating
threshold chosen on pooled val and the test metrics at it: ``server.evaluation``) and hands
a finished ``RoundRecord`` to a listener (run directory, console) at the end of every round.
``GuardedStrategy`` also tells it which sites took part
(``record_participation``): accepted, rejected (with the reason) and failed or timed out, so
the round's line names them even when a robust strategy (Krum) aggregates only some of the
accepted updates, and which sites declined to train (``record_declined``) and why (privacy
budget or site policy); their spent epsilon is still recorded. Every reply that trained is
handed to ``on_trained`` (the run's ``server.attestations`` store keeps the signed privacy
record it carries). With ``public_eval`` the global model is also scored on public data the
server holds (a simulation pool's official val / test splits: ``server.public_eval``) and the
figures go into the record's ``official`` field, next to the pooled site figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from flwr.app import ArrayRecord, MetricRecord, RecordDict

from common import keys
from common.config import EvalConfig
from common.metrics import from_wire
from common.naming import site_name
from common.roc import counts_from_wire
from server.declines import decline_reason
from server.evaluation import PooledEvaluation, SiteEvaluation, pooled_evaluation
from server.guarded import Participation
from server.iterate_average import IterateAverage


@dataclass
class RoundRecord:
    """Everything the server learned in one round (scalars only)."""

    round: int
    train_sites: list[str]
    eval_sites: list[str]
    train_loss: float
    loss: float
    accuracy: float
    auc: float
    epsilon_max: float | None
    epsilon: dict[str, float]
    site_auc: dict[str, float]
    site_accuracy: dict[str, float]
    elapsed_s: float
    rejected: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    aggregated: bool = True
    declined_sites: list[str] = field(default_factory=list)
    # why each declined site declined: "privacy budget" or "site policy"
    declined: dict[str, str] = field(default_factory=dict)
    sensitivity: float = math.nan
    specificity: float = math.nan
    precision: float = math.nan
    f1: float = math.nan
    balanced_accuracy: float = math.nan
    confusion: list[list[int]] = field(default_factory=list)
    site_metrics: dict[str, dict[str, object]] = field(default_factory=dict)
    # operating point chosen on pooled val (binary; None = arg-max) and the rule that chose it
    threshold: float | None = None
    threshold_rule: str = ""
    # pooled curves per split, test calibration, fairness at the threshold (server.evaluation)
    curves: dict[str, dict[str, object]] = field(default_factory=dict)
    calibration: dict[str, object] = field(default_factory=dict)
    fairness: dict[str, object] = field(default_factory=dict)
    # sampled for evaluation but not evaluated: site -> why (lost contact, timeout, error)
    eval_missed: dict[str, str] = field(default_factory=dict)
    # the global model on the public pool's official val / test splits (server.public_eval)
    official: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """JSON-safe dict (NaN becomes null)."""

        def clean(value: object) -> object:
            if isinstance(value, float) and math.isnan(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return {name: clean(value) for name, value in self.__dict__.items()}

    @classmethod
    def from_json(cls, line: dict[str, object]) -> RoundRecord:
        """Inverse of :meth:`to_json` (null floats become NaN)."""
        known = {f.name: f for f in fields(cls)}
        values = {k: v for k, v in line.items() if k in known}
        for f in fields(cls):
            if f.type in ("float", float) and values.get(f.name, 0.0) is None:
                values[f.name] = math.nan
        for name in ("site_auc", "site_accuracy"):
            values[name] = {
                k: math.nan if v is None else v
                for k, v in (values.get(name) or {}).items()  # type: ignore[union-attr]
            }
        return cls(**values)  # type: ignore[arg-type]


RoundListener = Callable[[RoundRecord, ArrayRecord], None]
# (site, train reply): keeps the privacy attestation a reply carries (server.attestations)
AttestationListener = Callable[[str, RecordDict], None]
# the global model -> its figures on public data held by the server (server.public_eval)
PublicEvaluation = Callable[[ArrayRecord], dict[str, object]]


def _metrics_of(reply: RecordDict) -> MetricRecord:
    return next(iter(reply.metric_records.values()))


def _site_evaluation(metrics: MetricRecord) -> SiteEvaluation:
    """A site's test metrics (site-computed AUC) and its counts per scope."""
    result = from_wire(metrics)
    counts = {
        scope: found
        for scope in keys.SCOPES
        if (found := counts_from_wire(metrics, scope, result.num_classes)) is not None
    }
    return SiteEvaluation(result, counts)


def _site_of(metrics: MetricRecord) -> str:
    return site_name(int(metrics[keys.SITE_INDEX]))  # type: ignore[arg-type]


@dataclass
class RoundRecorder:
    """Collects one round's replies and emits a ``RoundRecord`` when the round ends."""

    listener: RoundListener
    on_trained: AttestationListener | None = None
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    class_names: tuple[str, ...] = ()
    public_eval: PublicEvaluation | None = None
    # the served model of a round (server.iterate_average): scored on the public splits
    average: IterateAverage | None = None
    _train: dict[str, MetricRecord] = field(default_factory=dict)
    _declined: dict[str, MetricRecord] = field(default_factory=dict)
    _declined_why: dict[str, str] = field(default_factory=dict)
    _eval: dict[str, SiteEvaluation] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)
    _elapsed_before: float = 0.0
    _participation: Participation | None = None
    _eval_missed: dict[str, str] = field(default_factory=dict)

    def start_clock(self, elapsed_before: float | None = None) -> None:
        """Restart the run's clock; a resumed run continues from ``elapsed_before`` seconds."""
        self._started = time.monotonic()
        if elapsed_before is not None:
            self._elapsed_before = elapsed_before

    def record_participation(self, participation: Participation) -> None:
        """Called by ``GuardedStrategy`` before aggregation: who took part this round."""
        self._participation = participation
        self._train = dict(participation.accepted_metrics)
        if self.on_trained is not None:
            for site, content in participation.trained.items():
                self.on_trained(site, content)

    def aggregate_train(self, replies: list[RecordDict], weight_key: str) -> MetricRecord:
        """Flower ``train_metrics_aggr_fn``: weighted loss, summed examples, max epsilon."""
        aggregated_sites = {_site_of(m): m for m in map(_metrics_of, replies)}
        if self._participation is None:
            self._train = aggregated_sites
        total = sum(int(m[weight_key]) for m in aggregated_sites.values())  # type: ignore[arg-type]
        loss = sum(
            float(m[keys.TRAIN_LOSS]) * int(m[weight_key])  # type: ignore[arg-type]
            for m in aggregated_sites.values()
        ) / max(total, 1)
        aggregated: dict[str, float | int] = {weight_key: total, keys.TRAIN_LOSS: loss}
        epsilons = self._epsilons()
        if epsilons:
            aggregated[keys.EPSILON] = max(epsilons.values())
        return MetricRecord(aggregated)

    def record_declined(self, server_round: int, replies: list[RecordDict]) -> None:
        """``GuardedStrategy`` listener: the sites that declined this round's training."""
        self._declined = {_site_of(m): m for m in map(_metrics_of, replies)}
        self._declined_why = {_site_of(_metrics_of(r)): decline_reason(r) for r in replies}

    def record_evaluation_missed(self, server_round: int, missed: dict[str, str]) -> None:
        """``GuardedStrategy`` listener: sites sampled for evaluation that gave no result."""
        self._eval_missed = dict(missed)

    def aggregate_evaluate(self, replies: list[RecordDict], weight_key: str) -> MetricRecord:
        """Flower ``evaluate_metrics_aggr_fn``: pooled loss, accuracy and AUC."""
        self._eval = {_site_of(m): _site_evaluation(m) for m in map(_metrics_of, replies)}
        pooled = self._pooled().pooled
        return MetricRecord(
            {
                weight_key: pooled.num_examples,
                keys.EVAL_LOSS: pooled.loss,
                keys.EVAL_ACC: pooled.accuracy,
                keys.EVAL_AUC: pooled.auc,
            }
        )

    def end_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower ``evaluate_fn``: called after each round (and once before round 1)."""
        if server_round == 0:
            self.start_clock()
            return None
        evaluation = self._pooled()
        pooled = evaluation.pooled
        sites = evaluation.sites
        epsilons = self._epsilons()
        participation = self._participation or Participation(server_round)
        record = RoundRecord(
            round=server_round,
            train_sites=sorted(self._train),
            eval_sites=sorted(self._eval),
            train_loss=float(
                sum(float(m[keys.TRAIN_LOSS]) for m in self._train.values())  # type: ignore[arg-type]
                / max(len(self._train), 1)
            ),
            loss=pooled.loss,
            accuracy=pooled.accuracy,
            auc=pooled.auc,
            epsilon_max=max(epsilons.values()) if epsilons else None,
            epsilon=epsilons,
            site_auc={site: m.auc for site, m in sorted(sites.items())},
            site_accuracy={site: m.accuracy for site, m in sorted(sites.items())},
            elapsed_s=self._elapsed_before + time.monotonic() - self._started,
            rejected=dict(participation.rejected),
            failed=dict(participation.failed),
            aggregated=participation.aggregated,
            declined_sites=sorted(self._declined),
            declined=dict(sorted(self._declined_why.items())),
            sensitivity=pooled.sensitivity,
            specificity=pooled.specificity,
            precision=pooled.precision,
            f1=pooled.f1,
            balanced_accuracy=pooled.balanced_accuracy,
            confusion=[list(row) for row in pooled.confusion],
            site_metrics={site: m.summary() for site, m in sorted(sites.items())},
            threshold=evaluation.threshold,
            threshold_rule=evaluation.threshold_rule,
            curves=evaluation.curves,
            calibration=evaluation.calibration,
            fairness=evaluation.fairness,
            eval_missed=dict(self._eval_missed),
            official=self.public_eval(self.served(server_round, arrays))
            if self.public_eval is not None
            else {},
        )
        self.listener(record, arrays)
        self._train, self._declined, self._eval = {}, {}, {}
        self._eval_missed = {}
        self._declined_why = {}
        self._participation = None
        return None

    def served(self, server_round: int, arrays: ArrayRecord) -> ArrayRecord:
        """The model served after ``server_round``: the global model or its moving average."""
        return self.average.fold(server_round, arrays) if self.average is not None else arrays

    def _pooled(self) -> PooledEvaluation:
        return pooled_evaluation(self._eval, self.evaluation, self.class_names)

    def _epsilons(self) -> dict[str, float]:
        """Spent epsilon per site, trained or declined."""
        replies = {**self._declined, **self._train}
        return {
            site: float(m[keys.EPSILON])  # type: ignore[arg-type]
            for site, m in sorted(replies.items())
            if keys.EPSILON in m
        }
