"""ClientApp: what a hospital's SuperNode runs each round (train and evaluate handlers).

A reply carries only the model's parameters (``arrays``) and allow-listed scalar metrics
(``common.keys``). Images, labels, file names and DICOM tags stay inside this process.
Each instruction carries only the round settings (``common.round_settings``); where the
site's data, cache and privacy state live comes from its node config. The site's privacy
accountant history lives in its signed ledger in the state directory (``client.privacy_state``),
keyed by the run key the server sends (the run directory's name), so epsilon accumulates
across rounds, SuperNode restarts and resumed runs; a site whose ledger is not the plan's
(a round redone after a resume, rounds missed while down) re-plans the remaining rounds'
noise to what is left of the run's epsilon (``common.planning``); a round that would exceed
the budget is declined (``client.budget``), and so is a run that breaks the site's own
privacy policy (node config ``require-dp``, ``max-epsilon``, …: ``client.policy``), before
any data is read.
A trained DP round is appended to the site's signed privacy ledger before the reply leaves,
and the signed record travels with the reply (``attestation``, ``common.keys``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from logging import INFO

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.common.logger import log as flwr_log
from torch.utils.data import TensorDataset

from client.augment import SiteAugmenter, augmented_dataset, generator_prior
from client.budget import SitePrivacy
from client.clinical_inputs import clinical_features
from client.evaluate import evaluate_split
from client.onednn import bound_primitive_cache
from client.outbound import audit_outbound, contain_errors
from client.policy import SitePolicy
from client.privacy_state import one_round_at_a_time
from client.secagg import SecAggRouter, SiteHandlers
from client.site import PartitionSource, SiteSources
from client.train import LocalTrainingResult, train_locally
from common import keys
from common.config import MedfedConfig
from common.data.sites import SiteData
from common.errors import ConfigError
from common.ledger import record_to_wire, update_digest
from common.logs import drop_opacus_root_handler
from common.metrics import to_wire
from common.models import build_run_model
from common.params import arrays_to_model, model_to_arrays
from common.planning import RoundPlan, plan_round
from common.privacy import HistoryEntry
from common.roc import counts_to_wire, split_counts
from common.round_settings import RoundSettings, decode_round_settings

LOG = logging.getLogger("medfed.client")


def _log_loaded(data: SiteData) -> None:
    """Once per load: the image counts (Flower's log, as operators read it) and each skipped
    file (file name and reason only, never tags)."""
    counts = {"train": len(data.train_y), "val": len(data.val_y), "test": len(data.test_y)}
    split_counts = ", ".join(f"{split} {count}" for split, count in counts.items())
    flwr_log(
        INFO, "site '%s': loaded %d images (%s)", data.site_id, sum(counts.values()), split_counts
    )
    for skipped in data.skipped:
        LOG.warning("site '%s': skipped %s: %s", data.site_id, skipped.path.name, skipped.reason)


def _new_sources(progress: bool = False) -> SiteSources:
    return SiteSources.create(progress=progress, on_load=_log_loaded)


def build_client_app(
    mods: Sequence[Mod] = (),
    *,
    partitions: PartitionSource | None = None,
    site_defaults: Mapping[str, object] | None = None,
) -> ClientApp:
    """A ClientApp with medfed's handlers; ``mods`` wrap every message (e.g. capture).

    The app owns its ``SiteSources``: site data is read once per client process, not per round.
    A local simulation injects ``partitions`` (simulated hospitals cut from one pool) and
    ``site_defaults`` (node-config values it decides for every simulated site).
    Inside ``mods``: exceptions become redacted error replies, and messages of Flower's
    SecAgg+ workflow (legacy format) go to the SecAgg+ app instead. oneDNN's primitive cache
    is bounded first (``client.onednn``: before this process's first convolution), and the
    root log handler Opacus' import installs is removed (``common.logs``).
    """
    bound_primitive_cache()
    drop_opacus_root_handler()
    sources = SiteSources.create(
        progress=True, on_load=_log_loaded, partitions=partitions, site_defaults=site_defaults
    )
    router = SecAggRouter(
        SiteHandlers(
            train=lambda content, context: handle_train(content, context, sources),
            evaluate=lambda content, context: handle_evaluate(content, context, sources),
        )
    )
    app = ClientApp(mods=[*mods, contain_errors, router])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return Message(content=handle_train(msg.content, context, sources), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(content=handle_evaluate(msg.content, context, sources), reply_to=msg)

    return app


# ``audit-dir`` in a SuperNode's node config keeps a copy of every reply (client.outbound).
app = build_client_app([audit_outbound])


def _settings(content: RecordDict) -> RoundSettings:
    settings = decode_round_settings(content[keys.CONFIG])
    if settings.config.train.threads > 0:
        torch.set_num_threads(settings.config.train.threads)
    return settings


def _site_policy(
    settings: RoundSettings, context: Context, sources: SiteSources
) -> tuple[SitePolicy, str | None]:
    """The site's policy and why it refuses this task (None: allowed); reads no data."""
    policy = SitePolicy.from_node_config(sources.node_config(context.node_config))
    return policy, policy.check(settings.config, server_round=settings.server_round)


def _load(settings: RoundSettings, context: Context, sources: SiteSources) -> tuple[int, SiteData]:
    config = settings.config
    site_index, data = sources.load(context.node_config, config)
    torch.manual_seed(hash((config.run.seed, site_index, settings.server_round)) % 2**31)
    return site_index, data


def _declined_by_policy(content: RecordDict, context: Context, reason: str) -> RecordDict:
    """A decline reply before any data was read: the global model back, 0 examples."""
    LOG.warning("this site declines to train under its privacy policy: %s", reason)
    site_index = int(context.node_config.get(keys.NODE_PARTITION_ID, 0))  # type: ignore[call-overload]
    metrics = MetricRecord(
        {
            keys.NUM_EXAMPLES: 0,
            keys.SITE_INDEX: site_index,
            keys.TRAIN_LOSS: 0.0,
            keys.TRAIN_STATUS: keys.STATUS_DECLINED_POLICY,
        }
    )
    return RecordDict({keys.ARRAYS: content[keys.ARRAYS], keys.METRICS: metrics})


def handle_train(
    content: RecordDict, context: Context, sources: SiteSources | None = None
) -> RecordDict:
    """Train the received global model locally (DP-SGD when enabled) and reply.

    Declines (replies ``train-status`` = declined, 0 examples, the global model unchanged)
    when the run breaks the site's privacy policy (``client.policy``: checked before any data
    is read, the calibrated noise after planning) or the round would take the site past its
    privacy budget (``client.budget``).
    """
    sources = sources or _new_sources()
    settings = _settings(content)
    policy, refusal = _site_policy(settings, context, sources)
    if refusal is not None:
        return _declined_by_policy(content, context, refusal)
    site_index, data = _load(settings, context, sources)
    config = settings.config
    clinical = clinical_features(data, config)  # fusion runs: encoded at the site, fitted on train
    tabular = () if clinical is None else (clinical.train,)
    # images in [0, 1] (normalised by the model step), [clinical features,] labels
    dataset = TensorDataset(data.train_x, *tabular, data.train_y)
    run_key = settings.run_key or str(context.run_id)
    privacy = SitePrivacy.open(context.node_config, config, data.site_id, run_key)
    # one round at a time at this site: the budget check, the training and the ledger record
    # of two runs training here at once must not interleave (client.privacy_state)
    with one_round_at_a_time(privacy.store.directory):
        return _plan_train_and_record(content, settings, policy, privacy, site_index, data, dataset)


def _plan_train_and_record(
    content: RecordDict,
    settings: RoundSettings,
    policy: SitePolicy,
    privacy: SitePrivacy,
    site_index: int,
    data: SiteData,
    dataset: TensorDataset,
) -> RecordDict:
    """Plan the round, check policy and budget, train and book the spend (or decline)."""
    config = settings.config
    # on-site augmentation (client.augment): its generator's spend is planned and checked too
    augmenter = SiteAugmenter.open(config, privacy, site_index, data.train_x, data.train_y)
    pending = augmenter.pending() if augmenter else []  # the generator, before it is booked
    plan = plan_round(
        augmenter.augmented_size() if augmenter else len(dataset),
        config.train,
        config.privacy,
        planned_rounds=config.federation.num_rounds,
        calibrate=privacy.calibrate,
        server_round=settings.server_round,
        history=[*privacy.history(), *pending] if config.privacy.enabled else (),
        replan=privacy.replan,
        prior=generator_prior(augmenter),
    )
    if plan.replanned:
        LOG.info(
            "site '%s' re-plans round %d: its ledger holds other rounds than the plan's "
            "(a redone or missed round), noise multiplier %.4f -> %.4f for the rest of the run",
            data.site_id,
            settings.server_round,
            plan.planned_noise,
            plan.noise_multiplier,
        )
    refusal = policy.check(
        config, server_round=settings.server_round, noise_multiplier=plan.noise_multiplier
    )
    verdict = privacy.check(plan, pending=pending)
    if refusal is not None or not verdict.allowed:
        status = keys.STATUS_DECLINED_POLICY if refusal else keys.STATUS_DECLINED_BUDGET
        why = f"its privacy policy: {refusal}" if refusal else verdict.reason
        LOG.warning("site '%s' declines to train: %s", data.site_id, why)
        metrics = _train_metrics(config, site_index, plan, None, privacy.spent(), status)
        return RecordDict({keys.ARRAYS: content[keys.ARRAYS], keys.METRICS: metrics})
    model = build_run_model(config, data.in_channels)
    arrays_to_model(content[keys.ARRAYS], model)
    # the first time: trains the generator and books its spend before it is used
    train_set = augmented_dataset(augmenter, dataset, settings.server_round)
    result = train_locally(
        model,
        train_set,
        config.train.for_round(settings.server_round, config.federation.num_rounds),
        config.privacy,
        plan=plan,
        history=privacy.history(),
        proximal_mu=settings.proximal_mu,
    )
    result = dataclasses.replace(result, num_examples=len(dataset))  # real images only
    update = model_to_arrays(model)
    reply = RecordDict({keys.ARRAYS: update})
    epsilon = None
    if config.privacy.enabled:  # signed and on disk before anything leaves the site
        record = privacy.record(
            server_round=settings.server_round,
            entry=_round_entry(plan, before=privacy.history(), after=result.history),
            update_sha256=update_digest(update),
        )
        epsilon = record.epsilon
        reply[keys.ATTESTATION] = ConfigRecord(record_to_wire(record))  # type: ignore[arg-type]
    reply[keys.METRICS] = _train_metrics(config, site_index, plan, result, epsilon)
    return reply


def _round_entry(
    plan: RoundPlan, *, before: Sequence[HistoryEntry], after: Sequence[HistoryEntry]
) -> HistoryEntry:
    """The accountant entry of the round just trained: the steps Opacus' accountant took."""
    steps = sum(s for _, _, s in after) - sum(s for _, _, s in before)
    return (plan.noise_multiplier, plan.sample_rate, steps)


def _train_metrics(
    config: MedfedConfig,
    site_index: int,
    plan: RoundPlan,
    result: LocalTrainingResult | None,
    epsilon: float | None,
    declined: int = keys.STATUS_DECLINED_BUDGET,
) -> MetricRecord:
    """The same keys for a trained and a declined reply (``result`` None = ``declined``)."""
    metrics: dict[str, float | int] = {
        keys.NUM_EXAMPLES: result.num_examples if result else 0,
        keys.SITE_INDEX: site_index,
        keys.TRAIN_LOSS: result.train_loss if result else 0.0,
        keys.TRAIN_STATUS: keys.STATUS_TRAINED if result else declined,
    }
    if config.privacy.enabled:
        metrics[keys.EPSILON] = float(epsilon or 0.0)
        metrics[keys.DELTA] = config.privacy.delta
        metrics[keys.NOISE_MULTIPLIER] = plan.noise_multiplier
        metrics[keys.SAMPLE_RATE] = plan.sample_rate
    return MetricRecord(metrics)


def group_counts_to_wire(
    data: SiteData, scores: np.ndarray, min_group_size: int
) -> dict[str, int | float]:
    """Test-split counts per patient group (``common.data.groups``).

    Every group's keys are sent (Flower pools only replies with the same keys); a group with
    fewer than ``min_group_size`` images here, or without group tags, is sent as zeros, so
    neither its counts nor its size leave the site.
    """
    labels = data.test_y.numpy()
    num_classes = scores.shape[1] if scores.ndim == 2 and scores.shape[1] else 2
    tagged = len(data.test_groups) == len(labels)
    wire: dict[str, int | float] = {}
    for group in keys.GROUPS:
        members = np.array(
            [tagged and group in data.test_groups[i] for i in range(len(labels))], dtype=bool
        )
        if members.sum() < min_group_size:
            members = np.zeros(len(labels), dtype=bool)
        counts = split_counts(labels[members], scores.reshape(len(labels), num_classes)[members])
        wire.update(counts_to_wire(f"{keys.GROUP_SPLIT}.{group}", counts))
    return wire


def handle_evaluate(
    content: RecordDict, context: Context, sources: SiteSources | None = None
) -> RecordDict:
    """Evaluate the received global model on this site's val and test splits and reply.

    The reply holds the test split's metrics and, per split and per patient group of the
    test split (if large enough), threshold-grid counts (``common.roc``): counts only, never
    a per-image score.

    A run the site's privacy policy refuses is not evaluated either: before any data is read
    the handler raises ``ConfigError``, which ``contain_errors`` turns into a redacted error
    reply (the reason stays in the site's log), and the server carries on without the site.
    """
    sources = sources or _new_sources()
    settings = _settings(content)
    _, refusal = _site_policy(settings, context, sources)
    if refusal is not None:
        raise ConfigError(f"this site's privacy policy refuses the run: {refusal}")
    site_index, data = _load(settings, context, sources)
    config = settings.config
    model = build_run_model(config, data.in_channels)
    arrays_to_model(content[keys.ARRAYS], model)
    num_classes = config.model.num_classes
    clinical = clinical_features(data, config)
    result, test_counts, scores = evaluate_split(
        model,
        data.test_x,
        data.test_y,
        num_classes=num_classes,
        tabular=None if clinical is None else clinical.test,
    )
    wire = {**to_wire(result), **counts_to_wire("test", test_counts)}
    wire.update(group_counts_to_wire(data, scores, config.eval.min_group_size))
    # every site sends the same keys (empty val: zero counts)
    _, val_counts, _ = evaluate_split(
        model,
        data.val_x,  # type: ignore[arg-type]
        data.val_y,  # type: ignore[arg-type]
        num_classes=num_classes,
        tabular=None if clinical is None else clinical.val,
    )
    wire.update(counts_to_wire("val", val_counts))
    metrics = MetricRecord({**wire, keys.SITE_INDEX: site_index})
    return RecordDict({keys.METRICS: metrics})
