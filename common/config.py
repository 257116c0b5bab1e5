"""Typed run configuration, built once from Flower's run-config or CLI flags.

Flower flattens ``[tool.flwr.app.config]`` tables into dotted keys (``privacy.target-epsilon``).
``MedfedConfig.from_flat`` turns such a mapping into frozen dataclasses and rejects unknown
keys and badly typed values with a one-line ``ConfigError``; ``to_flat`` goes back, so the
server can ship the same settings to the sites inside a ``ConfigRecord``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from common.errors import ConfigError

Scalar = bool | int | float | str


@dataclass(frozen=True)
class DataConfig:
    """How a site's images are read and preprocessed."""

    image_size: int = 64
    channels: int = 1
    strict: bool = False
    test_fraction: float = 0.25
    class_names: str = "normal,opacity"
    frames: str = "middle"
    stack_depth: int = 16
    resize: str = "stretch"
    cache: bool = True
    cache_dir: str = ""
    synthetic_root: str = "~/.cache/medfed/synthetic"
    synthetic_images_per_site: int = 320
    synthetic_image_size: int = 128


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train."""

    name: str = "small-cnn"
    num_classes: int = 2


@dataclass(frozen=True)
class TrainConfig:
    """Local training at each site."""

    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1
    momentum: float = 0.9
    threads: int = 1
    local_steps: int = 0  # > 0: this many optimizer steps per round instead of local-epochs
    batches_per_epoch: int = 0  # > 0: batch = ceil(N / this), the same sample rate at every site
    max_physical_batch: int = 256  # DP: larger logical batches are split (BatchMemoryManager)


@dataclass(frozen=True)
class PrivacyConfig:
    """Record-level DP-SGD at each site (Opacus)."""

    enabled: bool = True
    target_epsilon: float = 8.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    noise_multiplier: float = 0.0  # > 0: use it; 0: derive it from target-epsilon and the plan
    grad_sample_mode: str = "hooks"  # Opacus per-sample gradients: hooks | ghost | ew | functorch
    secure_mode: bool = False  # cryptographically secure noise (needs the torchcsprng package)


@dataclass(frozen=True)
class FederationConfig:
    """Rounds and site sampling on the server."""

    num_rounds: int = 3
    num_sites: int = 3
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_sites: int = 2
    round_timeout: float = 600.0
    min_available: int = 0  # connected sites to wait for before sampling (0 = min-sites)


@dataclass(frozen=True)
class SecAggConfig:
    """Flower's SecAgg+ between the sites and the server (off by default).

    Shares and threshold are fractions of the sites sampled in a round (Flower rounds them,
    at least 2). Before masking, each site's parameters are scaled by
    ``num-examples / max-weight`` and clipped to ``±clipping-range``, so ``max-weight`` must
    be at least the largest site's training-set size.
    """

    enabled: bool = False
    num_shares: float = 1.0
    reconstruction_threshold: float = 0.7
    clipping_range: float = 8.0
    max_weight: float = 10000.0


@dataclass(frozen=True)
class RunConfig:
    """Where and under which name a run is recorded."""

    name: str = "demo"
    runs_dir: str = "runs"
    run_dir: str = ""
    seed: int = 0
    resume: bool = False  # continue ``run_dir`` from its last checkpoint


@dataclass(frozen=True)
class StrategyConfig:
    """Server-side aggregation (``server.strategies``); unused knobs are ignored."""

    name: str = "fedavg"
    proximal_mu: float = 0.01  # fedprox: weight of the client's proximal term
    server_lr: float = 0.1  # fedadam / fedyogi eta; fedavgm server learning rate
    server_momentum: float = 0.9  # fedavgm momentum; fedadam / fedyogi beta_1
    beta_2: float = 0.99  # fedadam / fedyogi second moment
    tau: float = 1e-3  # fedadam / fedyogi adaptivity
    trim_beta: float = 0.2  # fedtrimmedavg: fraction cut from each tail
    num_malicious: int = 1  # krum / multikrum: sites assumed malicious
    num_selected: int = 0  # multikrum: updates averaged (0 = all but num_malicious)


@dataclass(frozen=True)
class ValidationConfig:
    """Checks every site update must pass before aggregation (``server.validation``)."""

    enabled: bool = True
    norm_multiple: float = 10.0  # update norm <= this x the round's median update norm
    max_examples: int = 10_000_000  # a larger num-examples is implausible
    min_cosine: float = -1.0  # cosine to the median update; -1 disables the check


@dataclass(frozen=True)
class PartitionConfig:
    """Simulated hospitals cut from one labelled pool (``simulations.partition``).

    ``pool`` empty: sites read their own folders (or synthetic hospitals) as before.
    """

    pool: str = ""  # .npz file with <split>_images / <split>_labels arrays
    split: str = "train"
    kind: str = "iid"  # iid | dirichlet | quantity
    alpha: float = 0.5  # dirichlet concentration (smaller = more label skew)
    power: float = 1.5  # quantity skew: site sizes follow a power law with this exponent
    min_size: int = 20  # fewest images a site may get
    max_images: int = 0  # use only the first N pool images (0 = all)
    shift: bool = False  # per-site acquisition shift (intensity, contrast, noise, ...)
    seed: int = 0


@dataclass(frozen=True)
class SimulationConfig:
    """Local simulation only: engine resources and injected faults."""

    max_parallel: int = 2  # clients training at once (one CPU each)
    dropout: float = 0.0  # probability a sampled site fails its round


@dataclass(frozen=True)
class MedfedConfig:
    """The whole configuration of one federated run."""

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

    def __post_init__(self) -> None:
        _check_secagg(self)

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


# What Flower's SecAgg+ workflow can do: it aggregates with FedAvg and the server only ever
# sees the sum of the sites' updates, so nothing can be checked or ranked per site.
SECAGG_STRATEGIES = ("fedavg",)


def _check_secagg(config: MedfedConfig) -> None:
    """Refuse settings the SecAgg+ round engine cannot honour (never ignore them)."""
    if not config.secagg.enabled:
        return
    if config.strategy.name not in SECAGG_STRATEGIES:
        raise ConfigError(
            f"config key 'strategy.name' = {config.strategy.name!r}: with secagg.enabled=true "
            f"only {', '.join(SECAGG_STRATEGIES)} is possible (the server sees only the sum "
            "of the updates)"
        )
    if config.validation.enabled:
        raise ConfigError(
            "config key 'validation.enabled' = True: with secagg.enabled=true single updates "
            "cannot be validated (the server sees only their sum); set validation.enabled=false"
        )


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
