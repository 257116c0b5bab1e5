"""On-site generative augmentation: a site tops up its smaller classes with generated images.

With ``augment.generator = "cvae"`` a site trains a small conditional VAE
(``common.generative``) on its own training split only (never its validation or test
images), once per run: the first round it trains. Each round it then adds, to that round's
training set only, freshly generated images of every class that has fewer than
``augment.minority-ratio`` x the largest class's images (a class the site has no image of
is never generated). The generator, its weights and its images stay at the site: nothing
about them is sent (the reply's ``num-examples`` is the number of real training images).

Privacy (under DP): the generator is trained with Opacus DP-SGD, and its spend is part of
the run's spend at the site. Its accountant entry is a signed ledger record
(``common.ledger.GENERATOR_ROUND``) appended before the generator is used, so budget checks
(the run's target, the site's lifetime budget), ``medfed privacy show`` and ``verify``
compose it with the rounds. Its noise is calibrated to ``augment.epsilon-share`` of
``privacy.target-epsilon`` (or is ``privacy.noise-multiplier`` when that is fixed), and the
classifier's noise is calibrated so that the generator composed with all planned rounds
stays within the target. A generated image is a function of the DP generator only
(post-processing), and the classifier's DP-SGD protects each real image given the
generator, so the two compose adaptively.

The trained generator is kept in the site's state directory
(``<state-dir>/generators/<run>.pt``, 0600, beside the ledger): a simulated site's ClientApp
is not kept warm between rounds, and the privacy cost must be paid and recorded once. The
file's weight digest must match the ledger record; a missing or different file is never
retrained under DP (that would spend again): the site then trains without augmentation and
logs why.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from client.budget import SitePrivacy
from client.train import expected_warnings_silenced, privacy_engine, unhook_opacus
from common.config import AugmentConfig, MedfedConfig, PrivacyConfig
from common.files import atomic_write
from common.generative import ConditionalVAE, vae_loss
from common.ledger import GENERATOR_ROUND
from common.planning import Calibrate
from common.privacy import HistoryEntry, merge_history, noise_multiplier_for

LOG = logging.getLogger("medfed.client")
GENERATOR_DIR = "generators"


@dataclass(frozen=True)
class GeneratorPlan:
    """The generator's DP-SGD: batch, Poisson rate, steps and noise (0.0 without DP)."""

    batch_size: int
    sample_rate: float
    steps: int
    noise_multiplier: float

    def history_entry(self) -> HistoryEntry:
        """The accountant entry its training adds."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


def plan_generator(
    num_examples: int,
    augment: AugmentConfig,
    privacy: PrivacyConfig,
    calibrate: Calibrate = noise_multiplier_for,
) -> GeneratorPlan:
    """How the generator is trained on ``num_examples`` training images."""
    batch_size = max(1, min(augment.batch_size, num_examples))
    batches = math.ceil(num_examples / batch_size)
    steps = augment.epochs * batches
    noise = 0.0
    if privacy.enabled:
        noise = privacy.noise_multiplier
        if noise <= 0:
            noise = calibrate(
                target_epsilon=augment.epsilon_share * privacy.target_epsilon,
                delta=privacy.delta,
                sample_rate=1.0 / batches,
                steps=steps,
                accountant=privacy.accountant,
            )
    return GeneratorPlan(batch_size, 1.0 / batches, steps, noise)


def top_up(labels: torch.Tensor, num_classes: int, ratio: float) -> dict[int, int]:
    """Class -> images to generate so it has ``ratio`` x the largest class's count."""
    counts = torch.bincount(labels.long(), minlength=num_classes).tolist()
    wanted = math.ceil(ratio * max(counts))
    return {c: wanted - n for c, n in enumerate(counts) if 0 < n < wanted}


def train_generator(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    augment: AugmentConfig,
    privacy: PrivacyConfig,
    plan: GeneratorPlan,
) -> tuple[ConditionalVAE, HistoryEntry | None]:
    """Train a conditional VAE on these images (Opacus DP-SGD when ``privacy.enabled``).

    Returns the model and the accountant entry Opacus booked (None without DP).
    """
    model = ConditionalVAE(tuple(images.shape[1:]), num_classes)  # type: ignore[arg-type]
    model.train()
    loader = DataLoader(TensorDataset(images, labels), batch_size=plan.batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=augment.learning_rate)
    engine = None
    trained: torch.nn.Module = model
    with expected_warnings_silenced():
        if privacy.enabled:
            engine = privacy_engine(privacy)
            trained, optimizer, loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=plan.noise_multiplier,
                max_grad_norm=privacy.max_grad_norm,
                poisson_sampling=True,
            )
        try:
            for _ in range(augment.epochs):
                for batch, batch_labels in loader:
                    optimizer.zero_grad(set_to_none=True)
                    logits, mu, logvar = trained(batch, batch_labels)
                    vae_loss(logits, batch, mu, logvar).backward()
                    optimizer.step()
        finally:
            unhook_opacus(trained)
    clean = ConditionalVAE(model.shape, num_classes)  # type: ignore[arg-type]
    clean.load_state_dict(model.state_dict())
    clean.eval()
    if engine is None:
        return clean, None
    history = merge_history([], engine.accountant.history)
    steps = sum(s for _, _, s in history)
    return clean, (plan.noise_multiplier, plan.sample_rate, steps)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of the model's weights, by name (ties the cached file to its record)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}\0{array.dtype}\0{list(array.shape)}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass
class SiteAugmenter:
    """One site's augmentation for one run: plan, generator cache, ledger record, samples."""

    config: MedfedConfig
    privacy: SitePrivacy
    site_index: int
    images: torch.Tensor  # the site's training split (val and test never come here)
    labels: torch.Tensor
    needed: dict[int, int]
    plan: GeneratorPlan

    @classmethod
    def open(
        cls,
        config: MedfedConfig,
        privacy: SitePrivacy,
        site_index: int,
        images: torch.Tensor,
        labels: torch.Tensor,
    ) -> SiteAugmenter | None:
        """The site's augmenter; None when augmentation is off or no class needs images."""
        augment = config.augment
        if augment.generator == "none":
            return None
        needed = top_up(labels, config.model.num_classes, augment.minority_ratio)
        if not needed:
            return None
        plan = plan_generator(len(labels), augment, config.privacy, privacy.calibrate)
        return cls(config, privacy, site_index, images, labels, needed, plan)

    @property
    def path(self) -> Path:
        """Where this run's generator is kept (the site's state directory)."""
        name = hashlib.sha256(self.privacy.run_key.encode()).hexdigest()[:24]
        return self.privacy.store.directory / GENERATOR_DIR / f"{name}.pt"

    def augmented_size(self) -> int:
        """Training-set size of a round with generated images."""
        return len(self.labels) + sum(self.needed.values())

    def prior(self) -> list[HistoryEntry]:
        """The generator's spend in this run (planned or booked; empty without DP)."""
        return [self.plan.history_entry()] if self.config.privacy.enabled else []

    def recorded_digest(self) -> str | None:
        """The weight digest of this run's generator record in the ledger (None: none yet)."""
        for record in self.privacy.store.records():
            if record.run_key == self.privacy.run_key and record.round == GENERATOR_ROUND:
                return record.update_sha256
        return None

    def pending(self) -> list[HistoryEntry]:
        """Spend the generator would add now (empty once it is booked)."""
        if not self.config.privacy.enabled or self.recorded_digest() is not None:
            return []
        return self.prior()

    def generator(self) -> ConditionalVAE | None:
        """This run's generator: from the state directory, or trained (and booked) now."""
        cached = self._load()
        if not self.config.privacy.enabled:
            return cached if cached is not None else self._train()
        recorded = self.recorded_digest()
        if recorded is None:
            return self._train()
        if cached is not None and weights_digest(cached) == recorded:
            return cached
        LOG.warning(
            "the generator booked in this site's ledger is missing or changed at %s; "
            "training without augmentation (retraining it would spend privacy again)",
            self.path,
        )
        return None

    def _train(self) -> ConditionalVAE:
        augment, privacy = self.config.augment, self.config.privacy
        seeds = np.random.SeedSequence([self.config.run.seed, self.site_index])
        with torch.random.fork_rng():  # the classifier's randomness stays as without it
            torch.manual_seed(int(seeds.generate_state(1)[0]))
            model, entry = train_generator(
                self.images, self.labels, self.config.model.num_classes, augment, privacy, self.plan
            )
        digest = weights_digest(model)
        if entry is not None:  # booked before the generator is used
            self.privacy.record(server_round=GENERATOR_ROUND, entry=entry, update_sha256=digest)
        self._save(model)
        LOG.info("trained this site's generator (%d steps); it stays on site", self.plan.steps)
        return model

    def _save(self, model: ConditionalVAE) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"weights": model.state_dict(), "shape": list(model.shape)}, buffer)
        atomic_write(self.path, buffer.getvalue())

    def _load(self) -> ConditionalVAE | None:
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, weights_only=True)
            model = ConditionalVAE(tuple(saved["shape"]), self.config.model.num_classes)  # type: ignore[arg-type]
            model.load_state_dict(saved["weights"])
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as problem:
            LOG.warning("ignoring the unreadable generator %s: %s", self.path, problem)
            return None
        return model.eval()

    def augment(self, dataset: TensorDataset, server_round: int) -> TensorDataset:
        """The round's training set: the real images plus freshly generated ones."""
        model = self.generator()
        if model is None:
            return dataset
        labels = torch.cat(
            [torch.full((count,), c, dtype=torch.long) for c, count in sorted(self.needed.items())]
        )
        seed = np.random.SeedSequence([self.config.run.seed, self.site_index, server_round])
        rng = torch.Generator().manual_seed(int(seed.generate_state(1)[0]))
        images = model.sample(labels, generator=rng).to(self.images.dtype)
        real_x, real_y = dataset.tensors
        return TensorDataset(torch.cat([real_x, images]), torch.cat([real_y, labels]))


def augmented_dataset(
    augmenter: SiteAugmenter | None, dataset: TensorDataset, server_round: int
) -> TensorDataset:
    """``dataset`` with the round's generated images (unchanged without an augmenter)."""
    return dataset if augmenter is None else augmenter.augment(dataset, server_round)


def generator_prior(augmenter: SiteAugmenter | None) -> Sequence[HistoryEntry]:
    """The generator's spend the classifier's noise must leave room for."""
    return augmenter.prior() if augmenter is not None else ()
