"""One privacy audit: the canary membership audit with and without DP, then inversion.

``run_audit`` is what ``medfed privacy audit`` and ``benchmarks/privacy_audit.py`` call.
Both canary runs share the ordinary images, the canaries, their inclusion and the seeds;
only DP differs. The DP run uses the product's defaults (``PrivacyConfig``: clip 1.0, the
PRV accountant, delta 1e-5) at the chosen target epsilon, and the inversion attack under
DP uses that run's noise multiplier and clipping norm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from common.config import PrivacyConfig
from common.errors import ConfigError
from simulations.audit.canary import CanaryAudit, CanaryTraining, run_canary_audit
from simulations.audit.data import DEFAULT_MEDMNIST_ROOT, SOURCES, make_canaries, ordinary_images
from simulations.audit.inversion import (
    InversionProbe,
    InversionSettings,
    Reconstruction,
    attack_image,
)

# (phase, done, total): phases "train without DP", "train with DP", "invert"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AuditConfig:
    """Sizes and settings of one audit (``quick`` ones for tests)."""

    epsilon: float = 8.0
    delta: float = 1e-5
    canaries: int = 256
    ordinary: int = 100
    image_size: int = 16
    rounds: int = 8
    epochs_per_round: int = 15
    inversion_images: int = 4
    inversion_iterations: int = 200
    confidence: float = 0.95
    seed: int = 0
    source: str = "synthetic"
    medmnist_root: str = DEFAULT_MEDMNIST_ROOT
    threads: int = 1

    def __post_init__(self) -> None:
        if self.canaries < 10:
            raise ConfigError(f"audit canaries: need at least 10, got {self.canaries}")
        if self.ordinary < 1:
            raise ConfigError(f"audit ordinary: need at least 1 image, got {self.ordinary}")
        if self.image_size < 8:
            raise ConfigError(f"audit image-size: need at least 8, got {self.image_size}")
        if self.rounds < 1 or self.epochs_per_round < 1:
            raise ConfigError("audit rounds and epochs-per-round: need at least 1")
        if self.inversion_images < 1 or self.inversion_iterations < 1:
            raise ConfigError("audit inversion-images and inversion-iterations: need at least 1")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"audit confidence: must be in (0, 1), got {self.confidence}")
        if self.source not in SOURCES:
            raise ConfigError(f"audit source: '{self.source}' is not one of {', '.join(SOURCES)}")
        self.privacy()  # checks epsilon and delta with the product's own rules

    @classmethod
    def quick(cls, **overrides: object) -> AuditConfig:
        """A small audit (about a minute on one CPU core)."""
        sizes: dict[str, object] = {"canaries": 128, "ordinary": 60, "inversion_images": 2}
        return cls(**{**sizes, **overrides})  # type: ignore[arg-type]

    def privacy(self) -> PrivacyConfig:
        """The DP run's privacy settings (the product's defaults at this epsilon and delta)."""
        return PrivacyConfig(target_epsilon=self.epsilon, delta=self.delta)

    def training(self) -> CanaryTraining:
        """How the audited site trains."""
        return CanaryTraining(
            rounds=self.rounds, epochs_per_round=self.epochs_per_round, seed=self.seed
        )


@dataclass(frozen=True)
class AuditReport:
    """Everything the audit measured."""

    config: AuditConfig
    without_dp: CanaryAudit
    with_dp: CanaryAudit
    max_grad_norm: float
    inversion_without_dp: list[Reconstruction]
    inversion_with_dp: list[Reconstruction]
    seconds: dict[str, float] = field(default_factory=dict)


def run_audit(config: AuditConfig, progress: Progress | None = None) -> AuditReport:
    """Run the canary audit without and with DP, then the inversion attack."""

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(phase, done, total)

    torch.set_num_threads(max(config.threads, 1))
    ordinary = ordinary_images(
        config.source, config.ordinary, config.image_size, config.seed, config.medmnist_root
    )
    canaries = make_canaries(config.canaries, config.image_size, config.seed)
    seconds: dict[str, float] = {}
    audits: dict[bool, CanaryAudit] = {}
    for dp in (False, True):
        phase = "train with DP" if dp else "train without DP"
        privacy = config.privacy() if dp else PrivacyConfig(enabled=False)
        started = time.perf_counter()
        audits[dp] = run_canary_audit(
            ordinary,
            canaries,
            config.training(),
            privacy,
            confidence=config.confidence,
            on_round=lambda done, phase=phase: report(phase, done, config.rounds),
        )
        seconds[phase] = time.perf_counter() - started
    started = time.perf_counter()
    max_grad_norm = config.privacy().max_grad_norm
    inversions = _inversions(config, ordinary, audits[True].noise_multiplier, max_grad_norm, report)
    seconds["invert"] = time.perf_counter() - started
    return AuditReport(
        config=config,
        without_dp=audits[False],
        with_dp=audits[True],
        max_grad_norm=max_grad_norm,
        inversion_without_dp=inversions[False],
        inversion_with_dp=inversions[True],
        seconds=seconds,
    )


def _inversions(
    config: AuditConfig,
    ordinary: tuple[torch.Tensor, torch.Tensor],
    noise_multiplier: float,
    max_grad_norm: float,
    report: Progress,
) -> dict[bool, list[Reconstruction]]:
    torch.manual_seed(config.seed)
    probe = InversionProbe(ordinary[0].shape[1], 2, config.image_size)
    settings = InversionSettings(iterations=config.inversion_iterations, seed=config.seed)
    results: dict[bool, list[Reconstruction]] = {False: [], True: []}
    count = min(config.inversion_images, len(ordinary[1]))
    for index in range(count):
        for dp in (False, True):
            results[dp].append(
                attack_image(
                    probe,
                    ordinary[0][index],
                    int(ordinary[1][index]),
                    settings,
                    dp=dp,
                    noise_multiplier=noise_multiplier,
                    max_grad_norm=max_grad_norm,
                )
            )
        report("invert", index + 1, count)
    return results
