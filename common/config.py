"""Typed run configuration, built once from Flower's run-config or CLI flags.

Flower flattens ``[tool.flwr.app.config]`` tables into dotted keys (``privacy.target-epsilon``).
``MedfedConfig.from_flat`` turns such a mapping into frozen dataclasses and rejects unknown
keys and badly typed values with a one-line ``ConfigError``; ``to_flat`` goes back, so the
server can ship the same settings to the sites inside a ``ConfigRecord``.

Every dataclass checks its values when it is constructed (defaults, ``from_flat``,
``replace``): choices, ranges, and rules across sections, each refusal one line naming the
dotted key, the value and what is allowed (``config key 'train.batch-size' = 0: must be at
least 1``). So a bad setting is refused by the CLI or the ServerApp before round 1. The names
users pick (models, strategies, accountants, ...) are declared here once; the registries that
implement them are tested to match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, get_args

from common.clinical_columns import clinical_columns_rule, parse_clinical_columns
from common.errors import ConfigError
from common.keys import MAX_CLASSES
from common.lr_schedules import LR_SCHEDULES, LrSchedule, schedule_factor
from common.rules import above, at_least, check_fields, checked, not_empty, one_of, refuse, within

Scalar = bool | int | float | str

# The allowed values of the settings picked by name, declared once: the registries that
# implement them (common.models, server.strategies, simulations.partition, ...) import these
# or are tested to match them.
Accountant = Literal["prv", "rdp", "gdp"]
GradSampleMode = Literal["auto", "hooks", "ghost", "ew", "functorch"]
FrameMode = Literal["middle", "all", "stack"]
ResizeMode = Literal["stretch", "pad"]
SyntheticKind = Literal["images", "series", "clinical"]
ModelName = Literal[
    "small-cnn",
    "cnn-medium",
    "resnet18-gn",
    "cnn-medium-bn",
    "small-cnn-ws",
    "cnn-medium-ws",
    "scatter-cnn",
    "scatter-linear",
    "seq-gru",
    "seq-lstm",
    "fusion-cnn",
]
# models that take the encoded clinical variables (``data.clinical-columns``) with the image
FUSION_MODELS = ("fusion-cnn",)
ClinicalImpute = Literal["median", "mean"]
StrategyName = Literal[
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
]
PartitionKind = Literal["iid", "dirichlet", "quantity"]
GeneratorName = Literal["none", "cvae"]
ServerSplit = Literal["auto", "official", "off"]

ACCOUNTANTS: tuple[str, ...] = get_args(Accountant)
GRAD_SAMPLE_MODES: tuple[str, ...] = get_args(GradSampleMode)
FRAME_MODES: tuple[str, ...] = get_args(FrameMode)
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
SYNTHETIC_KINDS: tuple[str, ...] = get_args(SyntheticKind)
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
# models with BatchNorm: each image's output depends on the rest of its batch, so DP-SGD
# (per-image gradients, clipped one by one) cannot train them; non-DP runs only
BATCHNORM_MODELS: tuple[str, ...] = ("cnn-medium-bn",)
# models with weight-standardized convolutions (common.ws_conv): Opacus' hooks, not ew
WS_MODELS: tuple[str, ...] = ("small-cnn-ws", "cnn-medium-ws")
# models that read ordered stacks (N, C, D, H, W): data.frames = "stack" and no other
SEQUENCE_MODELS: tuple[str, ...] = ("seq-gru", "seq-lstm")
# Opacus engines whose per-sample gradients of those models match one-sample-at-a-time ones
# (tests/test_sequence_models.py); ghost clipping cannot norm layers called once per frame
SEQUENCE_GRAD_SAMPLE_MODES: tuple[str, ...] = ("auto", "hooks", "ew", "functorch")
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)
PARTITION_KINDS: tuple[str, ...] = get_args(PartitionKind)
GENERATOR_NAMES: tuple[str, ...] = get_args(GeneratorName)
CLINICAL_IMPUTE: tuple[str, ...] = get_args(ClinicalImpute)
SERVER_SPLITS: tuple[str, ...] = get_args(ServerSplit)
# strategies with a server learning rate (fedavgm: server-lr; fedadam / fedyogi: eta)
SERVER_LR_STRATEGIES: tuple[str, ...] = ("fedavgm", "fedadam", "fedyogi")
MIN_IMAGE_SIZE = 8  # the models halve the image three times before pooling


def parse_class_names(text: str) -> tuple[str, ...]:
    """``data.class-names`` as a tuple, in label-index order (blank entries dropped)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _class_names_rule(text: str) -> str | None:
    names = parse_class_names(text)
    if len(names) < 2 or len(set(names)) != len(names) or len(names) > MAX_CLASSES:
        return f"expected 2 to {MAX_CLASSES} distinct comma-separated class names"
    return None


@dataclass(frozen=True)
class _Section:
    """A config section: every field's rule is checked when it is constructed."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self.SECTION, self)


@dataclass(frozen=True)
class DataConfig(_Section):
    """How a site's images are read and preprocessed."""

    SECTION: ClassVar[str] = "data"
    image_size: int = checked(64, at_least(MIN_IMAGE_SIZE))
    channels: int = checked(1, one_of((1, 3)))
    strict: bool = False
    test_fraction: float = checked(0.25, within(0, 1, open_high=True))  # 0: no held-out split
    class_names: str = checked("normal,opacity", _class_names_rule)
    frames: FrameMode = checked("middle", one_of(FRAME_MODES))
    stack_depth: int = checked(16, at_least(1))
    resize: ResizeMode = checked("stretch", one_of(RESIZE_MODES))
    cache: bool = True
    cache_dir: str = ""
    workers: int = checked(0, at_least(0))  # decode processes for a first ingest (0 = per core)
    synthetic_root: str = checked("~/.cache/medfed/synthetic", not_empty)
    synthetic_images_per_site: int = checked(320, at_least(1))
    synthetic_image_size: int = checked(128, at_least(MIN_IMAGE_SIZE))
    # clinical variables for fusion models (``common.clinical_columns``); empty: none
    clinical_columns: str = checked("", clinical_columns_rule)
    # how a missing numeric clinical value is filled (fitted on the site's training split)
    clinical_impute: ClinicalImpute = checked("median", one_of(CLINICAL_IMPUTE))
    # what synthetic hospitals hold: "images" (one lesion task), "series": CT-like series
    # (common.data.synthetic_series) of synthetic-slices files each, synthetic-images-per-site
    # then counting series; "clinical": images whose label needs the image AND the patient's
    # age (common.data.synthetic, for fusion models)
    synthetic_kind: SyntheticKind = checked("images", one_of(SYNTHETIC_KINDS))
    synthetic_slices: int = checked(10, at_least(2))


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Which network to train."""

    SECTION: ClassVar[str] = "model"
    name: ModelName = checked("small-cnn", one_of(MODEL_NAMES))
    num_classes: int = checked(2, within(2, MAX_CLASSES))


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Local training at each site."""

    SECTION: ClassVar[str] = "train"
    local_epochs: int = checked(1, at_least(1))
    batch_size: int = checked(32, at_least(1))
    learning_rate: float = checked(0.1, above(0))
    momentum: float = checked(0.9, within(0, 1, open_high=True))
    # > 0: L2 weight decay in the sites' SGD (torch's weight_decay: this x the weights added
    # to each step's gradient); under DP it is added after Opacus' clipping and noise, to the
    # released gradient, so the privacy accounting is unchanged
    weight_decay: float = checked(0.0, within(0, 1, open_high=True))
    threads: int = checked(1, at_least(0))  # 0: leave torch's default
    # > 0: this many optimizer steps per round instead of local-epochs
    local_steps: int = checked(0, at_least(0))
    # > 0: batch = ceil(N / this), the same sample rate at every site
    batches_per_epoch: int = checked(0, at_least(0))
    # DP: larger logical batches are split (BatchMemoryManager)
    max_physical_batch: int = checked(256, at_least(1))
    # > 0: train on this many shifted/flipped views of each image; under DP their
    # per-sample gradients are averaged before clipping (client.augment_views)
    augment_views: int = checked(0, at_least(0))
    augment_shift: int = checked(2, at_least(0))  # pixels a view moves at most, each way
    augment_flip: bool = False  # also flip views left-right at random
    # > 0: also scale each view's brightness and contrast by factors in [1 - this, 1 + this]
    augment_intensity: float = checked(0.0, within(0, 1, open_high=True))
    # > 0: also turn each view about its centre by an angle drawn from [-this, this] degrees
    augment_rotate: float = checked(0.0, within(0, 180))
    # > 0: the loss aims at 1 - this on the true class, the rest spread over all classes
    # (torch's CrossEntropyLoss label_smoothing; per example, so DP accounting is unchanged)
    label_smoothing: float = checked(0.0, within(0, 1, open_high=True))
    # > 0 (no DP only): mixup (Zhang et al. 2018): each batch trains on its images blended
    # pairwise with a shuffled copy of itself, weights drawn from Beta(this, this), and the
    # loss blended alike (client.mixup)
    mixup: float = checked(0.0, at_least(0))
    # > 0 (no DP only): the loss adds this x log(the site's class frequencies) to the logits
    # (logit adjustment / balanced softmax), so local training does not pull the model
    # towards the site's label mix (client.logit_adjustment); 1 is the usual strength
    logit_adjustment: float = checked(0.0, at_least(0))
    # how learning-rate changes over the run's rounds (common.lr_schedules): constant, or
    # cosine from learning-rate in round 1 towards 0 at federation.num-rounds
    lr_schedule: LrSchedule = checked("constant", one_of(LR_SCHEDULES))

    def for_round(self, server_round: int, num_rounds: int) -> TrainConfig:
        """These settings with the learning rate of round ``server_round`` of ``num_rounds``."""
        factor = schedule_factor(self.lr_schedule, server_round, num_rounds)
        return dataclasses.replace(self, learning_rate=self.learning_rate * factor)


@dataclass(frozen=True)
class PrivacyConfig(_Section):
    """Record-level DP-SGD at each site (Opacus)."""

    SECTION: ClassVar[str] = "privacy"
    enabled: bool = True
    target_epsilon: float = checked(8.0, above(0))
    delta: float = checked(1e-5, within(0, 1, open_low=True, open_high=True))
    max_grad_norm: float = checked(1.0, above(0))
    accountant: Accountant = checked("prv", one_of(ACCOUNTANTS))
    # > 0: use it; 0: derive it from target-epsilon and the plan
    noise_multiplier: float = checked(0.0, at_least(0))
    # Opacus per-sample gradients; auto: ew (expanded weights) where every trainable layer is
    # one torch differentiates per sample as written, else hooks (client.train.grad_sample_mode_for)
    grad_sample_mode: GradSampleMode = checked("auto", one_of(GRAD_SAMPLE_MODES))
    secure_mode: bool = False  # cryptographically secure noise (needs the torchcsprng package)


@dataclass(frozen=True)
class FederationConfig(_Section):
    """Rounds and site sampling on the server."""

    SECTION: ClassVar[str] = "federation"
    num_rounds: int = checked(3, at_least(1))
    num_sites: int = checked(3, at_least(1))
    fraction_train: float = checked(1.0, within(0, 1, open_low=True))
    fraction_evaluate: float = checked(1.0, within(0, 1, open_low=True))
    min_sites: int = checked(2, at_least(1))
    round_timeout: float = checked(600.0, above(0))
    # connected sites to wait for before sampling (0 = min-sites)
    min_available: int = checked(0, at_least(0))
    # seconds sampling waits for min-available sites; then it goes on with those online
    # (training needs min-sites of them, else the run stops with a resumable checkpoint)
    wait_timeout: float = checked(300.0, above(0))
    # rounds in a row that kept the global model (fewer than min-sites valid updates: sites
    # failed, gave no reply or were rejected) before the run stops with a resumable
    # checkpoint (0 = never stop)
    max_failed_rounds: int = checked(5, at_least(0))


@dataclass(frozen=True)
class SecAggConfig(_Section):
    """Flower's SecAgg+ between the sites and the server (off by default).

    Shares and threshold are fractions of the sites sampled in a round (Flower rounds them,
    at least 2). Before masking, each site's parameters are scaled by
    ``num-examples / max-weight`` and clipped to ``±clipping-range``, so ``max-weight`` must
    be at least the largest site's training-set size.
    """

    SECTION: ClassVar[str] = "secagg"
    enabled: bool = False
    num_shares: float = checked(1.0, within(0, 1, open_low=True))
    reconstruction_threshold: float = checked(0.7, within(0, 1, open_low=True))
    clipping_range: float = checked(8.0, above(0))
    max_weight: float = checked(10000.0, above(0))


@dataclass(frozen=True)
class RunConfig(_Section):
    """Where and under which name a run is recorded."""

    SECTION: ClassVar[str] = "run"
    name: str = checked("demo", not_empty)
    runs_dir: str = checked("runs", not_empty)
    run_dir: str = ""
    seed: int = checked(0, at_least(0))
    resume: bool = False  # continue ``run_dir`` from its last checkpoint
    # round checkpoints kept in the run directory (0 = every round's; the newest is always kept)
    keep_checkpoints: int = checked(0, at_least(0))


@dataclass(frozen=True)
class StrategyConfig(_Section):
    """Server-side aggregation (``server.strategies``); unused knobs are ignored."""

    SECTION: ClassVar[str] = "strategy"
    name: StrategyName = checked("fedavg", one_of(STRATEGY_NAMES))
    # fedprox: weight of the client's proximal term
    proximal_mu: float = checked(0.01, at_least(0))
    # fedadam / fedyogi eta; fedavgm server learning rate
    server_lr: float = checked(0.1, above(0))
    # how server-lr changes over the run (server.lr_schedule): constant, or cosine from
    # server-lr at round 1 towards 0 at federation.num-rounds
    server_lr_schedule: LrSchedule = checked("constant", one_of(LR_SCHEDULES))
    # fedavgm momentum; fedadam / fedyogi beta_1
    server_momentum: float = checked(0.9, within(0, 1, open_high=True))
    # fedadam / fedyogi second moment
    beta_2: float = checked(0.99, within(0, 1, open_high=True))
    tau: float = checked(1e-3, above(0))  # fedadam / fedyogi adaptivity
    # fedtrimmedavg: fraction cut from each tail
    trim_beta: float = checked(0.2, within(0, 0.5, open_high=True))
    num_malicious: int = checked(1, at_least(0))  # krum / multikrum: sites assumed malicious
    # multikrum: updates averaged (0 = all but num_malicious)
    num_selected: int = checked(0, at_least(0))
    # server-side moving average of the global model's iterates (server.iterate_average):
    # 0 = off; d > 0 evaluates and releases ema_r = d ema_(r-1) + (1 - d) w_r
    ema_decay: float = checked(0.0, within(0, 1, open_high=True))


@dataclass(frozen=True)
class ValidationConfig(_Section):
    """Checks every site update must pass before aggregation (``server.validation``)."""

    SECTION: ClassVar[str] = "validation"
    enabled: bool = True
    # update norm <= this x the round's median update norm
    norm_multiple: float = checked(10.0, above(0))
    max_examples: int = checked(10_000_000, at_least(1))  # a larger num-examples is implausible
    # cosine to the median update; -1 disables the check
    min_cosine: float = checked(-1.0, within(-1, 1))


@dataclass(frozen=True)
class PartitionConfig(_Section):
    """Simulated hospitals cut from one labelled pool (``simulations.partition``).

    ``pool`` empty: sites read their own folders (or synthetic hospitals) as before.
    """

    SECTION: ClassVar[str] = "partition"
    pool: str = ""  # .npz file with <split>_images / <split>_labels arrays
    split: str = checked("train", not_empty)
    kind: PartitionKind = checked("iid", one_of(PARTITION_KINDS))
    # dirichlet concentration (smaller = more label skew)
    alpha: float = checked(0.5, above(0))
    # quantity skew: site sizes follow a power law with this exponent
    power: float = checked(1.5, at_least(0))
    min_size: int = checked(20, at_least(0))  # fewest images a site may get
    max_images: int = checked(0, at_least(0))  # use only the first N pool images (0 = all)
    shift: bool = False  # per-site acquisition shift (intensity, contrast, noise, ...)
    seed: int = checked(0, at_least(0))


@dataclass(frozen=True)
class SimulationConfig(_Section):
    """Local simulation only: engine resources and injected faults."""

    SECTION: ClassVar[str] = "simulation"
    max_parallel: int = checked(2, at_least(1))  # clients training at once (one CPU each)
    # probability a sampled site fails its round
    dropout: float = checked(0.0, within(0, 1, open_high=True))


@dataclass(frozen=True)
class EvalConfig(_Section):
    """How the global model is evaluated (``common.roc``, ``common.fairness``).

    Sites evaluate on ``val`` (carved from their training images when they have none:
    ``val-fraction``, stratified, seeded) and ``test``; the server picks the operating
    threshold on the pooled ``val`` counts. A simulation cut from a public pool
    (``partition.pool``) can also score the global model on the pool's official ``val`` /
    ``test`` splits on the server (``server.public_eval``): ``server-split`` ``auto`` does
    when the pool file has them and the sites were cut from another split, ``official``
    requires it, ``off`` never does.
    """

    SECTION: ClassVar[str] = "eval"
    # > 0: the highest threshold reaching this sensitivity on val; 0: Youden's J
    target_sensitivity: float = checked(0.0, within(0, 1, open_high=True))
    # share of a site's training images kept for validation when it names no val split
    val_fraction: float = checked(0.2, within(0, 1, open_high=True))
    # patient groups (sex, age band) smaller than this are never reported
    min_group_size: int = checked(10, at_least(1))
    # a gap in sensitivity/specificity between groups or sites above this is flagged
    flag_gap: float = checked(0.1, within(0, 1, open_low=True))
    # the pool's official val/test splits scored on the server: auto, official or off
    server_split: ServerSplit = checked("auto", one_of(SERVER_SPLITS))


@dataclass(frozen=True)
class AugmentConfig(_Section):
    """On-site generative augmentation of a site's smaller classes (``client.augment``).

    ``generator`` = ``cvae``: each site trains a small conditional VAE on its own training
    split (once per run; under DP with Opacus DP-SGD, its spend booked in the site's ledger)
    and tops every class up to ``minority-ratio`` x the largest class with generated images.
    The generator and its images never leave the site.
    """

    SECTION: ClassVar[str] = "augment"
    generator: GeneratorName = checked("none", one_of(GENERATOR_NAMES))
    # each smaller class is topped up to this share of the largest class
    minority_ratio: float = checked(1.0, within(0, 1, open_low=True))
    epochs: int = checked(30, at_least(1))  # passes over the training split
    batch_size: int = checked(32, at_least(1))
    learning_rate: float = checked(1e-3, above(0))
    # under DP: share of privacy.target-epsilon given to the generator (calibrated noise only)
    epsilon_share: float = checked(0.25, within(0, 1, open_low=True, open_high=True))


@dataclass(frozen=True)
class MedfedConfig:
    """The whole configuration of one federated run.

    Every section checks its own values when constructed; the rules that tie settings of
    different sections together are checked here, so a bad run config is refused before any
    site is contacted.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    run: RunConfig = field(default_factory=RunConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        federation = self.federation
        if federation.min_sites > federation.num_sites:
            raise refuse(
                "federation.min-sites",
                federation.min_sites,
                f"must be at most federation.num-sites ({federation.num_sites})",
            )
        classes = parse_class_names(self.data.class_names)
        if self.model.num_classes != len(classes):
            raise refuse(
                "model.num-classes",
                self.model.num_classes,
                f"must equal the number of data.class-names ({len(classes)}: {', '.join(classes)})",
            )
        if self.eval.server_split == "official":
            if not self.partition.pool:
                raise refuse(
                    "eval.server-split",
                    "official",
                    "needs partition.pool, a public pool with official val/test splits",
                )
            if self.partition.split in ("val", "test"):
                raise refuse(
                    "eval.server-split",
                    "official",
                    f"the sites were cut from the pool's '{self.partition.split}' split, "
                    "so it cannot also be the server's held-out split",
                )
        if self.run.resume and not self.run.run_dir:
            raise refuse("run.resume", True, "needs run.run-dir, the run directory to continue")
        _check_frames(self)
        _check_secagg(self)
        _check_clinical(self)
        _check_augment(self)
        _check_views(self)
        _check_server_lr_schedule(self)
        _check_grad_sample_mode(self)
        _check_no_dp_training(self)
        _check_batchnorm(self)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> MedfedConfig:
        """Build a config from dotted kebab-case keys; unknown keys are an error."""
        sections: dict[str, dict[str, Any]] = {f.name: {} for f in dataclasses.fields(cls)}
        for key, value in flat.items():
            section, _, name = key.partition(".")
            if section not in sections or not name:
                raise ConfigError(f"unknown config key '{key}'")
            sections[section][name.replace("-", "_")] = (key, value)
        built = {
            f.name: _build_section(f.default_factory, sections[f.name])  # type: ignore[misc]
            for f in dataclasses.fields(cls)
        }
        return cls(**built)

    def to_flat(self) -> dict[str, Scalar]:
        """Dotted kebab-case keys, the inverse of :meth:`from_flat`."""
        flat: dict[str, Scalar] = {}
        for section in dataclasses.fields(self):
            values = dataclasses.asdict(getattr(self, section.name))
            for name, value in values.items():
                flat[f"{section.name}.{name.replace('_', '-')}"] = value
        return flat

    def replace(self, **overrides: Scalar) -> MedfedConfig:
        """A copy with some dotted keys changed, e.g. ``replace(**{"run.name": "x"})``."""
        flat = self.to_flat()
        flat.update(overrides)
        return MedfedConfig.from_flat(flat)


def _check_frames(config: MedfedConfig) -> None:
    """Sequence models read stacks and 2D models single frames: refuse any other pairing."""
    name, frames = config.model.name, config.data.frames
    if name in SEQUENCE_MODELS and frames != "stack":
        raise refuse(
            "model.name", name, f'is a sequence model: it needs data.frames="stack" (not {frames})'
        )
    if name not in SEQUENCE_MODELS and frames == "stack":
        raise refuse(
            "data.frames",
            frames,
            f"needs a sequence model ({', '.join(SEQUENCE_MODELS)}); {name} is 2D: "
            "use data.frames=middle or all",
        )
    if name in SEQUENCE_MODELS and config.privacy.enabled:
        mode = config.privacy.grad_sample_mode
        if mode not in SEQUENCE_GRAD_SAMPLE_MODES:
            raise refuse(
                "privacy.grad-sample-mode",
                mode,
                f"{name} needs one of {', '.join(SEQUENCE_GRAD_SAMPLE_MODES)} "
                "(Opacus' per-sample gradients of its recurrent layer)",
            )


# What Flower's SecAgg+ workflow can do: it aggregates with FedAvg and the server only ever
# sees the sum of the sites' updates, so nothing can be checked or ranked per site.
SECAGG_STRATEGIES = ("fedavg",)


def _check_secagg(config: MedfedConfig) -> None:
    """Refuse settings the SecAgg+ round engine cannot honour (never ignore them)."""
    if not config.secagg.enabled:
        return
    if config.strategy.name not in SECAGG_STRATEGIES:
        raise refuse(
            "strategy.name",
            config.strategy.name,
            f"with secagg.enabled=true only {', '.join(SECAGG_STRATEGIES)} is possible "
            "(the server sees only the sum of the updates)",
        )
    if config.strategy.ema_decay > 0:
        raise refuse(
            "strategy.ema-decay",
            config.strategy.ema_decay,
            "is not possible with secagg.enabled=true (Flower's SecAgg+ workflow sends the "
            "sites the raw global model to evaluate); set strategy.ema-decay=0",
        )
    if config.validation.enabled:
        raise refuse(
            "validation.enabled",
            True,
            "with secagg.enabled=true single updates cannot be validated (the server sees "
            "only their sum); set validation.enabled=false",
        )


# Accountants that compose different (noise, sample rate) entries: Opacus' GDP accountant
# accounts only its last entry, so it cannot add the generator's spend to the classifier's.
AUGMENT_ACCOUNTANTS = ("prv", "rdp")


def _check_views(config: MedfedConfig) -> None:
    """Several views per example need per-sample gradients to average before clipping; the
    intensity and rotation of views need views."""
    train, privacy = config.train, config.privacy
    if train.augment_views > 1 and privacy.enabled and privacy.grad_sample_mode == "ghost":
        raise refuse(
            "train.augment-views",
            train.augment_views,
            "needs per-sample gradients to average the views before clipping; ghost "
            "clipping never forms them: use privacy.grad-sample-mode=hooks",
        )
    for key, value in (
        ("train.augment-intensity", train.augment_intensity),
        ("train.augment-rotate", train.augment_rotate),
    ):
        if value > 0 and train.augment_views < 1:
            raise refuse(
                key,
                value,
                "changes the augmented views, and train.augment-views is 0 (none): set "
                "train.augment-views to 1 or more",
            )


def _check_grad_sample_mode(config: MedfedConfig) -> None:
    """Expanded weights cannot differentiate through a weight-standardized convolution."""
    privacy, name = config.privacy, config.model.name
    if privacy.enabled and privacy.grad_sample_mode == "ew" and name in WS_MODELS:
        raise refuse(
            "privacy.grad-sample-mode",
            "ew",
            "expanded weights cannot compute per-sample gradients through the weight "
            f"standardization of {name}: use hooks",
        )


# Training settings whose examples' losses depend on other records, so that under DP-SGD a
# clipped per-example gradient would not carry one record alone: key -> what it does.
_NO_DP_TRAINING = {
    "mixup": "blends two patients' images into one example",
    "logit_adjustment": "adds the site's class frequencies to every example's loss",
}


def _check_no_dp_training(config: MedfedConfig) -> None:
    """Refuse, under DP-SGD, a training setting that breaks the per-record bound."""
    if not config.privacy.enabled:
        return
    for name, what in _NO_DP_TRAINING.items():
        value = getattr(config.train, name)
        if value > 0:
            key = "train." + name.replace("_", "-")
            raise refuse(
                key,
                value,
                f"{what}, so DP-SGD's per-record bound would not hold: "
                f"set {key} = 0 or privacy.enabled = false",
            )


def _check_batchnorm(config: MedfedConfig) -> None:
    """BatchNorm mixes the images of a batch: no per-image gradient exists to clip."""
    if config.privacy.enabled and config.model.name in BATCHNORM_MODELS:
        raise refuse(
            "model.name",
            config.model.name,
            "uses BatchNorm, which mixes the images of a batch, so DP-SGD has no per-image "
            "gradient to clip: use cnn-medium (GroupNorm) or set privacy.enabled = false",
        )


def _check_server_lr_schedule(config: MedfedConfig) -> None:
    """A schedule needs a strategy that has a server learning rate."""
    strategy = config.strategy
    if strategy.server_lr_schedule != "constant" and strategy.name not in SERVER_LR_STRATEGIES:
        raise refuse(
            "strategy.server-lr-schedule",
            strategy.server_lr_schedule,
            f"needs a strategy with a server learning rate ({', '.join(SERVER_LR_STRATEGIES)}),"
            f" not {strategy.name}",
        )


def _check_augment(config: MedfedConfig) -> None:
    """Refuse augmentation settings the generator or its accounting cannot honour."""
    if config.augment.generator == "none":
        return
    if config.data.frames == "stack":
        raise refuse(
            "augment.generator",
            config.augment.generator,
            "generates single 2D images; not with data.frames = stack",
        )
    if config.model.name in FUSION_MODELS:
        raise refuse(
            "augment.generator",
            config.augment.generator,
            f"generates images without clinical variables; not with {config.model.name}",
        )
    if config.privacy.enabled and config.privacy.accountant not in AUGMENT_ACCOUNTANTS:
        raise refuse(
            "privacy.accountant",
            config.privacy.accountant,
            f"with augment.generator = {config.augment.generator} the generator's and the "
            f"classifier's spend are composed: use {' or '.join(AUGMENT_ACCOUNTANTS)}",
        )


def _check_clinical(config: MedfedConfig) -> None:
    """A fusion model needs clinical columns, an image-only model must not be given any
    (they would be silently unused), and fusion models take single 2D images."""
    fusion = config.model.name in FUSION_MODELS
    columns = parse_clinical_columns(config.data.clinical_columns).columns
    if fusion and not columns:
        raise refuse(
            "model.name",
            config.model.name,
            'needs data.clinical-columns (e.g. "age,sex"): the clinical variables it fuses',
        )
    if columns and not fusion:
        raise refuse(
            "data.clinical-columns",
            config.data.clinical_columns,
            f"only fusion models read clinical variables ({', '.join(FUSION_MODELS)})",
        )
    if fusion and config.data.frames == "stack":
        raise refuse("data.frames", "stack", f"{config.model.name} takes 2D images (middle or all)")


T = TypeVar("T")


def _build_section(section_type: type[T], values: dict[str, tuple[str, Any]]) -> T:
    known = {f.name: f for f in dataclasses.fields(section_type)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, (key, value) in values.items():
        if name not in known:
            raise ConfigError(f"unknown config key '{key}'")
        default = getattr(section_type(), name)
        kwargs[name] = _coerce(key, value, type(default))
    return section_type(**kwargs)


def _coerce(key: str, value: Any, target: type) -> Scalar:
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif target is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif target is str:
        return str(value)
    raise ConfigError(f"config key '{key}' expects {target.__name__}, got {value!r}")
