"""Local training at a site: SGD, wrapped by Opacus for DP-SGD when privacy is on.

DP-SGD = per-sample gradient clipping + Gaussian noise + Poisson sampling, all by Opacus'
``PrivacyEngine``. A round is planned first (``common.planning.plan_round``, re-exported
here; ``medfed privacy plan`` uses the same code), so the site can check its budget before
touching the data.
Each round restores the site's accountant history into a fresh engine, so epsilon is
cumulative. Logical batches larger than ``train.max-physical-batch`` are split by Opacus'
``BatchMemoryManager``. ``privacy.grad-sample-mode`` picks Opacus' per-sample gradient
engine; ``auto`` (the default) takes ``ew`` (torch's expanded weights: the per-sample
gradients replace the batch gradient instead of being formed beside it; the fastest on
``small-cnn``, ``cnn-medium`` and ``scatter-cnn`` on a quiet machine) where every trainable
layer allows it, else ``hooks``; ``ghost`` was the slowest on our conv nets (BENCHMARKS.md).
``privacy.secure-mode`` draws noise and batches from a cryptographically secure generator
(Opacus ``secure_mode``; needs the ``torchcsprng`` package): turn it on for a production
deployment; it is off by default because it is slower and that package is not installed
here. With FedProx a proximal term keeps the local model near the global one
(``client.proximal``); the reported training loss is the data loss alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property

import torch
from opacus import PrivacyEngine
from opacus.grad_sample import AbstractGradSampleModule
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client.augment_views import augmented_views, average_view_gradients
from client.logit_adjustment import LogitAdjustedLoss
from client.mixup import mix_batch
from client.proximal import ProximalTerm
from common.config import PrivacyConfig, TrainConfig
from common.data.preprocess import model_logits
from common.errors import ConfigError
from common.planning import Calibrate, RoundPlan, plan_round  # noqa: F401 (re-exported)
from common.privacy import HistoryEntry, epsilon_of, merge_history


@dataclass
class PreparedTraining:
    """Model, optimizer, loss and loader ready for local steps (Opacus-wrapped under DP)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    loader: DataLoader
    engine: PrivacyEngine | None
    plan: RoundPlan


def unhook_opacus(model: nn.Module) -> None:
    """Take Opacus' hooks off ``model`` once its steps are done (no-op for a plain module).

    The hooks refer back to their ``GradSampleModule``, which refers to the model: a
    reference cycle that only Python's full collection frees, and a process holding ~400k
    long-lived objects (torch, Flower, Opacus) seldom runs one. Until it did, each round's
    wrapper, per-sample gradients and activations stayed resident: a site's process grew
    ~29 MiB a round (BENCHMARKS.md, sessions 12-13). Unhooking breaks the cycle, so reference
    counting frees them at once, at no cost.
    """
    if isinstance(model, AbstractGradSampleModule):
        model.to_standard_module()


@dataclass(frozen=True)
class ViewSettings:
    """Augmented views per example (``train.augment-*``)."""

    count: int
    shift: int
    flip: bool
    intensity: float = 0.0
    rotate: float = 0.0

    @classmethod
    def of(cls, train: TrainConfig) -> ViewSettings | None:
        """The run's view settings, or None when ``train.augment-views`` is 0."""
        if train.augment_views < 1:
            return None
        return cls(
            train.augment_views,
            train.augment_shift,
            train.augment_flip,
            train.augment_intensity,
            train.augment_rotate,
        )

    def expand(
        self, inputs: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each example's views (images augmented; other inputs and labels repeated)."""
        images, *others = inputs
        return (
            [
                augmented_views(
                    images, self.count, self.shift, self.flip, self.intensity, self.rotate
                ),
                *(other.repeat_interleave(self.count, dim=0) for other in others),
            ],
            labels.repeat_interleave(self.count, dim=0),
        )


@dataclass(frozen=True)
class LocalTrainingResult:
    """What one site's local training produced (all of it stays on site except scalars)."""

    num_examples: int
    train_loss: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    history: list[HistoryEntry]  # this run's accountant history, this round included
    privacy: PrivacyConfig

    @cached_property
    def epsilon(self) -> float | None:
        """This run's cumulative epsilon at the site (None without DP; computed on demand:
        the accountant takes a noticeable fraction of a second)."""
        if not self.privacy.enabled:
            return None
        return epsilon_of(
            self.history, delta=self.privacy.delta, accountant=self.privacy.accountant
        )


# Layers whose per-sample gradients torch's expanded weights (Opacus' "ew") compute, as long
# as a subclass keeps their forward (weight standardization, WSConv2d, does not): the layers
# of medfed's models, each checked against one-image-at-a-time gradients in the tests
EW_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.GroupNorm)


def grad_sample_mode_for(model: nn.Module, requested: str) -> str:
    """The Opacus mode that trains ``model``: ``requested``, or for ``auto`` ``ew`` when
    every module holding trainable parameters is an ``EW_LAYERS`` layer with its own
    forward, else ``hooks`` (e.g. weight-standardized convolutions, Opacus' DP RNNs)."""
    if requested != "auto":
        return requested
    for module in model.modules():
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        if not any(
            isinstance(module, layer) and type(module).forward is layer.forward
            for layer in EW_LAYERS
        ):
            return "hooks"
    return "ew"


def prepare_training(
    model: nn.Module,
    dataset: TensorDataset,
    train: TrainConfig,
    privacy: PrivacyConfig,
    *,
    plan: RoundPlan,
    history: Sequence[HistoryEntry] = (),
) -> PreparedTraining:
    """Build the optimizer and loader; attach Opacus when ``privacy.enabled``."""
    model.train()  # Opacus refuses a model in eval mode
    loader = DataLoader(dataset, batch_size=plan.batch_size, shuffle=True)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=train.learning_rate,
        momentum=train.momentum,
        weight_decay=train.weight_decay,
    )
    criterion: nn.Module = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
    if train.logit_adjustment > 0:
        if privacy.enabled:
            raise ValueError("logit adjustment is not possible under DP-SGD")
        criterion = LogitAdjustedLoss(
            dataset.tensors[-1], train.logit_adjustment, train.label_smoothing
        )
    if not privacy.enabled:
        return PreparedTraining(model, optimizer, criterion, loader, None, plan)
    engine = privacy_engine(privacy)
    engine.accountant.history = [tuple(e) for e in history]  # type: ignore[misc]
    mode = grad_sample_mode_for(model, privacy.grad_sample_mode)
    wrapped = engine.make_private(
        module=model,
        optimizer=optimizer,
        criterion=criterion,
        data_loader=loader,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=privacy.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode=mode,
    )
    if mode == "ghost":  # ghost clipping also wraps the loss
        dp_model, dp_optimizer, criterion, dp_loader = wrapped
    else:
        dp_model, dp_optimizer, dp_loader = wrapped
    return PreparedTraining(dp_model, dp_optimizer, criterion, dp_loader, engine, plan)


def privacy_engine(privacy: PrivacyConfig) -> PrivacyEngine:
    """Opacus' engine for the run's accountant; secure mode without its package is a
    one-line ``ConfigError``, not a traceback."""
    try:
        return PrivacyEngine(accountant=privacy.accountant, secure_mode=privacy.secure_mode)
    except ImportError:
        raise ConfigError(
            "privacy.secure-mode needs the torchcsprng package (pip install torchcsprng)"
        ) from None


def _steps_taken(engine: PrivacyEngine) -> int:
    return sum(int(steps) for _, _, steps in engine.accountant.history)


def _batches(prepared: PreparedTraining, max_physical_batch: int) -> Iterator[tuple]:
    """Physical batches, cycling the loader; under DP split by ``BatchMemoryManager``."""
    while True:
        with ExitStack() as stack:
            loader = prepared.loader
            if prepared.engine is not None:
                loader = stack.enter_context(
                    BatchMemoryManager(
                        data_loader=loader,
                        max_physical_batch_size=max_physical_batch,
                        optimizer=prepared.optimizer,  # type: ignore[arg-type]
                    )
                )
            yield from loader


def run_steps(
    prepared: PreparedTraining,
    steps: int,
    max_physical_batch: int = 256,
    proximal: ProximalTerm | None = None,
    views: ViewSettings | None = None,
    mixup: float = 0.0,
) -> float:
    """Take ``steps`` logical optimizer steps; return the example-weighted mean loss.

    Under DP a logical step is one Poisson batch (possibly split into physical batches,
    possibly empty: an empty batch still takes a noise-only step, as DP-SGD requires).
    A proximal term goes into the loss without DP and into Opacus' step hook with DP.
    ``views``: train on augmented views of each image (``client.augment_views``); under DP
    each example's views are averaged into one per-sample gradient before clipping.
    ``mixup`` > 0 (no DP only; the config refuses it with DP): blend each batch with a
    shuffled copy of itself (``client.mixup``), after its views are drawn.
    """
    if mixup > 0 and prepared.engine is not None:
        raise ValueError("mixup is not possible under DP-SGD")
    prepared.model.train()
    engine = prepared.engine
    if proximal is not None and engine is not None:
        proximal.attach(prepared.optimizer)  # type: ignore[arg-type]
    start = _steps_taken(engine) if engine is not None else 0
    taken, total_loss, total_seen = 0, 0.0, 0
    if steps < 1:
        return 0.0
    for *inputs, labels in _batches(prepared, max_physical_batch):
        prepared.optimizer.zero_grad(set_to_none=True)
        # inputs: (images,) or, for a fusion model, (images, clinical features)
        if not len(labels) and _forms_per_sample_gradients(prepared):
            # ew and functorch fail on a batch of 0 images; none has a gradient to form
            _no_per_sample_gradients(prepared.model)
        else:
            loss = _backward(prepared, inputs, labels, proximal, views, mixup)
            if len(labels):  # an empty batch's mean loss is NaN
                total_loss += float(loss.detach()) * len(labels)
                total_seen += len(labels)
        prepared.optimizer.step()  # an empty Poisson batch still takes its noise-only step
        taken = _steps_taken(engine) - start if engine is not None else taken + 1
        if taken >= steps:
            break
    return total_loss / max(total_seen, 1)


def _forms_per_sample_gradients(prepared: PreparedTraining) -> bool:
    """DP through per-sample gradients (hooks, ew, functorch); ghost clipping forms norms."""
    return prepared.engine is not None and not isinstance(
        prepared.optimizer, DPOptimizerFastGradientClipping
    )


def _backward(
    prepared: PreparedTraining,
    inputs: list[torch.Tensor],
    labels: torch.Tensor,
    proximal: ProximalTerm | None,
    views: ViewSettings | None,
    mixup: float = 0.0,
) -> torch.Tensor:
    """The batch's loss, its gradients (per sample under DP, views averaged) filled in."""
    targets = labels
    if views is not None:
        inputs, targets = views.expand(inputs, labels)
    if mixup > 0:
        mixed = mix_batch(inputs, targets, mixup)
        loss = mixed.loss(prepared.criterion, model_logits(prepared.model, *mixed.inputs))
    else:
        loss = prepared.criterion(model_logits(prepared.model, *inputs), targets)
    if proximal is not None and prepared.engine is None:
        (loss + proximal.penalty()).backward()
    else:
        loss.backward()
    if views is not None and prepared.engine is not None:
        average_view_gradients(prepared.model, views.count)
    return loss


def _no_per_sample_gradients(model: nn.Module) -> None:
    """Per-sample gradients of an empty batch: Opacus' optimizer clips and sums none of
    them (zeros) and adds the step's noise, as for an empty batch under ``hooks``."""
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.grad_sample = parameter.new_zeros((0, *parameter.shape))


# Opacus/torch warnings that are expected here and would flood every round's log.
_EXPECTED_WARNINGS = (
    "Secure RNG turned off",  # secure_mode is a documented option, off by default
    "Optimal order is the largest alpha",  # RDP search bound; PRV is the default accountant
    "Full backward hook is firing",  # inputs never require grad in DP-SGD
)


@contextmanager
def expected_warnings_silenced() -> Iterator[None]:
    """Silence the Opacus/torch warnings every DP-SGD step here would repeat."""
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=f".*{message}")
        yield


def train_locally(
    model: nn.Module,
    dataset: TensorDataset,
    train: TrainConfig,
    privacy: PrivacyConfig,
    *,
    plan: RoundPlan,
    history: Sequence[HistoryEntry] = (),
    proximal_mu: float = 0.0,
) -> LocalTrainingResult:
    """One round of local training; returns loss, cumulative epsilon and updated history.

    ``dataset`` holds (images in [0, 1], labels), or (images, clinical features, labels)
    for a fusion model; each batch is normalised on its way into the model
    (``common.data.preprocess.model_logits``, shared with evaluation).
    ``proximal_mu`` > 0 adds FedProx's proximal term anchored at ``model``'s weights as
    received (call this right after loading the global model).
    """
    proximal = ProximalTerm(model, proximal_mu) if proximal_mu > 0 else None
    with expected_warnings_silenced():
        prepared = prepare_training(model, dataset, train, privacy, plan=plan, history=history)
        try:
            loss = run_steps(
                prepared,
                plan.steps,
                train.max_physical_batch,
                proximal,
                ViewSettings.of(train),
                train.mixup,
            )
        finally:
            unhook_opacus(prepared.model)
    new_history: list[HistoryEntry] = []
    if prepared.engine is not None:
        new_history = merge_history([], prepared.engine.accountant.history)
    return LocalTrainingResult(
        num_examples=len(dataset),
        train_loss=loss,
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        history=new_history,
        privacy=privacy,
    )
