"""A wrapper around any Flower strategy: validated updates, dropouts, resumable rounds.

``GuardedStrategy`` is itself a Flower ``Strategy`` (so Flower's own ``start`` loop drives
it) and delegates sampling and aggregation to the wrapped strategy. Around aggregation it
0. samples only after a bounded wait for sites (``server.availability``): a phase never
   waits without a deadline, and training stops the run cleanly when fewer than
   ``min_replies`` sites are online,
1. separates failed replies (client error, or one the SuperLink made for a site it lost)
   and sampled sites that never replied (timeout), naming each by its site name (learned
   from its earlier replies; its node id only in the log),
2. validates every other update against the global model it was sent
   (``server.validation``), logging and excluding rejected ones,
3. aggregates only when at least ``min_replies`` updates were accepted, else keeps the global
   model for that round, and
4. reports who took part to a listener (the round recorder), and
5. sends the sites the *served* model to evaluate: the global model, or its moving average
   over rounds when ``strategy.ema-decay`` > 0 (``server.iterate_average``).
Accepted replies are aggregated in site order, so the result does not depend on the order
in which replies arrived. ``start(..., start_round=k)`` continues a run after round ``k``:
the wrapped strategy sees the true round numbers (FedAdam's bias correction uses them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import AggregationError, InconsistentMessageReplies
from flwr.serverapp.strategy import FedAvg, Result, Strategy

from common import keys
from common.config import ValidationConfig
from common.naming import site_name
from server.availability import (
    Availability,
    FixedNodes,
    RunStopped,
    lost_reason,
    minimums_at_most,
)
from server.declines import DeclineListener, report_declined, split_declined
from server.iterate_average import IterateAverage
from server.lr_schedule import ServerLrSchedule
from server.validation import Candidate, validate_round

LOG = logging.getLogger("medfed.server")


@dataclass
class Participation:
    """Which sites took part in one training round, and what happened to the others."""

    round: int
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    accepted_metrics: dict[str, MetricRecord] = field(default_factory=dict)
    aggregated: bool = True
    # every reply that trained (accepted or rejected), for its privacy attestation
    trained: dict[str, RecordDict] = field(default_factory=dict)


ParticipationListener = Callable[[Participation], None]
# (round, site -> why it missed the round's evaluation)
EvaluationMissListener = Callable[[int, dict[str, str]], None]
OFFLINE = "offline (not connected when the round began)"
EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def _site_index(message: Message) -> int | None:
    try:
        metrics = next(iter(message.content.metric_records.values()))
        value = metrics[keys.SITE_INDEX]
    except (StopIteration, KeyError):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if float(value).is_integer() and value >= 0 else None


def short_reason(reason: str, limit: int = 200) -> str:
    """The informative last line of an error text (Ray wraps client errors in tracebacks)."""
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    last = lines[-1]
    if "Message: " in last:
        last = last.split("Message: ", 1)[1]
    last = last.rstrip("'>").strip()
    return last if len(last) <= limit else last[: limit - 3] + "..."


class GuardedStrategy(Strategy):
    """Validate, count and order replies around a wrapped Flower strategy."""

    def __init__(
        self,
        inner: FedAvg,
        *,
        validation: ValidationConfig,
        min_replies: int,
        on_participation: ParticipationListener | None = None,
        on_declined: DeclineListener | None = None,
        availability: Availability | None = None,
        on_evaluation_missed: EvaluationMissListener | None = None,
        node_sites: dict[int, str] | None = None,
        average: IterateAverage | None = None,
        server_lr: ServerLrSchedule | None = None,
        max_failed_rounds: int = 0,
    ) -> None:
        self.inner = inner
        # rounds in a row that kept the global model (too few valid updates) before the run
        # stops (0: never)
        self.max_failed_rounds = max_failed_rounds
        self._failed_streak = 0
        # sets the inner strategy's server learning rate before each aggregation (None: as built)
        self.server_lr = server_lr
        # the served model (server.iterate_average): what the sites are sent to evaluate
        self.average = average
        self.availability = availability or Availability(
            wanted=max(1, min_replies), needed=max(1, min_replies), timeout=300.0
        )
        self.on_evaluation_missed = on_evaluation_missed
        self.on_declined = on_declined
        self.validation = validation
        self.min_replies = max(1, min_replies)
        self.on_participation = on_participation
        self._offset = 0
        self._reference: dict[str, np.ndarray] = {}
        self._sampled: set[int] = set()
        self._sent: list[Message] = []
        self._sent_evaluate: list[Message] = []
        self._short_round = -1  # a round whose training already waited out the deadline
        # node id -> site name, learned from replies (the lifecycle keeps it across a resume)
        self._node_sites: dict[int, str] = node_sites if node_sites is not None else {}
        self._online: set[int] = set()

    # -- Flower Strategy interface ---------------------------------------------------------
    def summary(self) -> None:
        """Log the wrapped strategy's settings."""
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global model sent, wait (boundedly) for sites, then let the wrapped
        strategy sample from those online."""
        true_round = server_round + self._offset
        self._reference = {name: array.numpy() for name, array in arrays.items()}
        online = self.availability.wait(grid.get_node_ids, what=f"round {true_round} training")
        if len(online) < self.availability.wanted:
            self._short_round = true_round
        if len(online) < self.min_replies:
            raise RunStopped(
                f"{len(online)} site(s) online after waiting "
                f"{self.availability.timeout:g} s (federation.wait-timeout), "
                f"{self.min_replies} needed (federation.min-sites)"
            )
        with minimums_at_most(self.inner, len(online)):
            messages = list(
                self.inner.configure_train(true_round, arrays, config, FixedNodes(grid, online))
            )
        self._sampled = {message.metadata.dst_node_id for message in messages}
        self._online = set(online)
        self._sent = messages  # the grid gives each its message id when it sends it
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Exclude failed and invalid replies, then aggregate the rest in site order."""
        true_round = server_round + self._offset
        all_replies = list(replies)
        replies, declined = split_declined(all_replies)
        report_declined(true_round, declined, self.on_declined)
        participation = Participation(true_round)
        destinations = _destinations(self._sent)
        good: list[tuple[Candidate, Message]] = []
        for message in replies:
            node = _node_of(message, destinations)
            if message.has_error():
                participation.failed[self._site_of_node(node)] = _error_reason(message)
                continue
            index = _site_index(message)
            site = site_name(index) if index is not None else f"node {node}"
            if any(c.site == site for c, _ in good):  # two nodes claim one site: keep both apart
                site = f"{site} (node {node})"
            elif index is not None:
                self._node_sites[node] = site
            good.append((Candidate(site, message.content), message))
            participation.trained[site] = message.content
        replied = {_node_of(message, destinations) for message in all_replies}
        for node in sorted(self._sampled - replied):
            participation.failed[self._site_of_node(node)] = "no reply before the round timeout"
        failed_nodes = {self._site_of_node(node): node for node in self._sampled}
        named = {*participation.failed, *participation.trained}
        named.update(site_name(i) for m in declined if (i := _site_index(m)) is not None)
        participation.failed.update(self._offline(named))

        verdict = validate_round([c for c, _ in good], self._reference, self.validation)
        accepted_ids = {id(c) for c in verdict.accepted}
        accepted = sorted(
            ((c, m) for c, m in good if id(c) in accepted_ids), key=lambda pair: pair[0].site
        )
        participation.rejected = dict(sorted(verdict.rejected.items()))
        participation.accepted = [c.site for c, _ in accepted]
        participation.accepted_metrics = {
            c.site: next(iter(c.content.metric_records.values())) for c, _ in accepted
        }
        participation.aggregated = len(accepted) >= self.min_replies
        for site, reason in participation.rejected.items():
            LOG.warning("round %d: rejected update from %s: %s", true_round, site, reason)
        for site, reason in participation.failed.items():
            LOG.warning(
                "round %d: %s%s did not take part: %s",
                true_round,
                site,
                _node_note(site, failed_nodes.get(site)),
                reason,
            )
        if not participation.aggregated:
            LOG.warning(
                "round %d: only %d valid update(s), %d needed: global model kept",
                true_round,
                len(accepted),
                self.min_replies,
            )
        if self.on_participation is not None:
            self.on_participation(participation)
        self._count_failed_round(participation)
        if not participation.aggregated:
            return None, None
        if self.server_lr is not None:
            self.server_lr.apply(self.inner, true_round)
        try:
            arrays, metrics = self.inner.aggregate_train(true_round, [m for _, m in accepted])
        except (AggregationError, InconsistentMessageReplies) as problem:
            participation.aggregated = False
            LOG.warning("round %d: aggregation failed, global model kept: %s", true_round, problem)
            return None, None
        return self._keep_dtypes(arrays), metrics

    def _count_failed_round(self, participation: Participation) -> None:
        """Stop the run after ``max_failed_rounds`` rounds in a row that left the global model
        as it was (too few valid updates: crashed or killed site processes, broken sites):
        going on would only record rounds that change nothing, and report the run as
        finished. Some sites still answering does not reset the count; an aggregated round
        does."""
        if participation.aggregated:
            self._failed_streak = 0
            return
        self._failed_streak += 1
        if self.max_failed_rounds and self._failed_streak >= self.max_failed_rounds:
            reasons = sorted({**participation.failed, **participation.rejected}.items())
            shown = "; ".join(f"{site}: {short_reason(why, 120)}" for site, why in reasons[:2])
            more = f" (and {len(reasons) - 2} more)" if len(reasons) > 2 else ""
            valid = len(participation.accepted)
            what = (
                "every site failed"
                if not valid
                else f"only {valid} valid update(s) came, {self.min_replies} needed"
            )
            raise RunStopped(
                f"{self._failed_streak} rounds in a row in which {what} "
                f"(federation.max-failed-rounds); round {participation.round}: {shown}{more}"
            )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Wait (boundedly) for sites, then let the wrapped strategy sample from those online;
        with nobody online the round goes unevaluated."""
        true_round = server_round + self._offset
        if self.average is not None:
            arrays = self.average.fold(true_round, arrays)
        online = self.availability.wait(
            grid.get_node_ids,
            what=f"round {true_round} evaluation",
            patient=self._short_round != true_round,
        )
        with minimums_at_most(self.inner, len(online)):
            messages = list(
                self.inner.configure_evaluate(true_round, arrays, config, FixedNodes(grid, online))
            )
        self._sent_evaluate = messages
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Name the sites that missed the evaluation, then delegate the rest."""
        true_round = server_round + self._offset
        all_replies = list(replies)
        missed: dict[str, str] = {}
        answered: set[int] = set()
        destinations = _destinations(self._sent_evaluate)
        for message in all_replies:
            node = _node_of(message, destinations)
            answered.add(node)
            if message.has_error():
                reason = _error_reason(message)
                refused = keys.parse_not_approved(reason)  # a gate's refusal names its site
                if refused is not None and refused[1] is not None:
                    self._node_sites.setdefault(node, site_name(refused[1]))
                missed[self._site_of_node(node)] = reason
            elif (index := _site_index(message)) is not None:
                self._node_sites.setdefault(node, site_name(index))
        sampled = {message.metadata.dst_node_id for message in self._sent_evaluate}
        for node in sorted(sampled - answered):
            missed[self._site_of_node(node)] = "no reply before the round timeout"
        nodes = {self._site_of_node(node): node for node in sampled}
        for site, reason in missed.items():
            LOG.warning(
                "round %d: %s%s was not evaluated: %s",
                true_round,
                site,
                _node_note(site, nodes.get(site)),
                reason,
            )
        if self.on_evaluation_missed is not None:
            self.on_evaluation_missed(true_round, dict(sorted(missed.items())))
        good = [message for message in all_replies if not message.has_error()]
        if not good:
            return None
        return self.inner.aggregate_evaluate(true_round, good)

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
        *,
        start_round: int = 0,
    ) -> Result:
        """Flower's round loop, for rounds ``start_round + 1 .. num_rounds``."""
        self._offset = start_round

        def shifted_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if evaluate_fn is None or (server_round == 0 and start_round > 0):
                return None  # the resumed model was evaluated when its round ended
            return evaluate_fn(server_round + start_round, arrays)

        return super().start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=num_rounds - start_round,
            timeout=timeout,
            train_config=train_config,
            evaluate_config=evaluate_config,
            evaluate_fn=shifted_evaluate if evaluate_fn is not None else None,
        )

    def _keep_dtypes(self, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """Cast the aggregate back to the global model's dtypes.

        Flower's FedAdam / FedYogi return float64 arrays for a float32 model (a float64
        step size under NumPy 2 promotion); the sites would then be sent float64 weights and
        reply float32, so every update would fail the dtype check from round 2 on.
        """
        if arrays is None:
            return None
        return ArrayRecord(
            {
                name: Array(np.asarray(array.numpy(), dtype=self._reference[name].dtype))
                if name in self._reference and array.dtype != str(self._reference[name].dtype)
                else array
                for name, array in arrays.items()
            }
        )

    def _offline(self, named: set[str]) -> dict[str, str]:
        """Sites seen in earlier rounds that were not connected when this round began (and
        gave no reply under another node id). Unknown when an unnamed node was online but
        not sampled: it may be one of them, reconnected under a new id."""
        if any(n not in self._node_sites and n not in self._sampled for n in self._online):
            return {}
        online_sites = {self._node_sites[n] for n in self._online if n in self._node_sites}
        known = set(self._node_sites.values())
        return {site: OFFLINE for site in sorted(known - online_sites - named)}

    def _site_of_node(self, node: int) -> str:
        return self._node_sites.get(node, f"node {node}")


def _destinations(sent: Sequence[Message]) -> dict[str, int]:
    """Instruction message id -> the node it was sent to (ids exist once the grid sent them)."""
    return {m.metadata.message_id: m.metadata.dst_node_id for m in sent if m.metadata.message_id}


def _node_of(reply: Message, destinations: dict[str, int]) -> int:
    """The node a reply is about: the one its instruction went to. (A reply the SuperLink
    made for a node it lost comes from the SuperLink's own id.)"""
    return destinations.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


def _error_reason(message: Message) -> str:
    """Why a reply is an error, in plain words where the SuperLink made it up."""
    return lost_reason(message.error.code) or short_reason(message.error.reason)


def _node_note(site: str, node: int | None) -> str:
    """`` (node N)`` for the log, unless the site is only known by its node id."""
    return "" if node is None or site == f"node {node}" else f" (node {node})"
