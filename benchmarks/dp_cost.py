"""What DP-SGD costs per local epoch: plain SGD vs Opacus hooks, ghost clipping, ew, functorch.

Same model, same data (PneumoniaMNIST training split, 28x28 grayscale), same batch size,
through medfed's own training code (``client.train.prepare_training`` + ``run_steps``; DP
with Poisson sampling at the same expected batch). Per-step time = the fastest of
``--repeats`` timed chunks of ``--chunk`` steps, the modes interleaved (on a shared machine
the minimum is the least inflated figure); an epoch is ceil(N / batch) such steps. Prints
s/epoch, examples/s and the ratio to plain SGD, as a Markdown table for BENCHMARKS.md.

``auto`` is the product's default (``privacy.grad-sample-mode``): ``ew`` on these models.

Experimental variants (``--modes``), measured for issue 19 and not product settings:
``hooks-conv`` swaps Opacus' default Conv2d per-sample gradient (unfold + einsum) for its
alternative ``convolution2d_backward_as_a_convolution`` (one grouped convolution; shipped by
Opacus but not registered) while the chunk runs; ``plain-cl`` / ``hooks-cl`` / ``ew-cl`` put
the model in channels-last memory format. ``ew-cl`` is right but no faster than ``ew``;
``hooks-cl`` is faster but WRONG: with channels-last weights, Opacus 1.6's hooks give wrong
per-sample gradients for convolutions with more than one input channel (differences of
0.2-0.3 against the contiguous layout on small-cnn); it is measured only to record that this
"win" is not one.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/dp_cost.py [--models small-cnn cnn-medium]
        [--batch-size 256] [--threads 2] [--repeats 10] [--chunk 5]
        [--data ../shared/data/medmnist/pneumoniamnist.npz] [--profile]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from opacus.grad_sample import GradSampleModule
from opacus.grad_sample.conv import convolution2d_backward_as_a_convolution
from torch import nn
from torch.utils.data import TensorDataset

from client.train import plan_round, prepare_training, run_steps
from common.config import MedfedConfig
from common.data.preprocess import model_logits
from common.models import build_model
from common.scatter_cnn import ScatterFeatures

MODES = ("plain", "hooks", "ghost", "ew")
ALL_MODES = (*MODES, "auto", "functorch", "hooks-conv", "plain-cl", "hooks-cl", "ew-cl")
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/medmnist/pneumoniamnist.npz"


def prepare(
    name: str, mode: str, dataset: TensorDataset, batch_size: int, chunk: int
) -> Callable[[], None]:
    """A function that takes ``chunk`` local steps of ``name`` in ``mode``."""
    base, _, variant = mode.partition("-")
    config = MedfedConfig().replace(
        **{
            "model.name": name,
            "train.batch-size": batch_size,
            "train.max-physical-batch": 2 * batch_size,  # Poisson batches are not split
            "privacy.enabled": base != "plain",
            "privacy.noise-multiplier": 1.0,
            "privacy.grad-sample-mode": "hooks" if base == "plain" else base,
        }
    )
    plan = plan_round(len(dataset), config.train, config.privacy, planned_rounds=1)
    torch.manual_seed(0)
    model = build_model(config.model, 1)
    if variant == "cl":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    prepared = prepare_training(model, dataset, config.train, config.privacy, plan=plan)

    def run_chunk() -> None:
        run_steps(prepared, chunk, config.train.max_physical_batch)

    if variant != "conv":
        return run_chunk

    def with_conv_sampler() -> None:
        samplers = GradSampleModule.GRAD_SAMPLERS
        default = samplers[nn.Conv2d]
        samplers[nn.Conv2d] = convolution2d_backward_as_a_convolution
        try:
            run_chunk()
        finally:
            samplers[nn.Conv2d] = default

    return with_conv_sampler


def fill_feature_memo(name: str, dataset: TensorDataset, batch_size: int = 512) -> bool:
    """Transform every image once if ``name`` works on scattering features, as a site's
    process has after its first round: the coefficients are memoised per image (in the
    process), so without this the first modes timed pay the transforms and the later ones
    do not. Returns whether ``name`` has such a memo."""
    model = build_model(MedfedConfig().replace(**{"model.name": name}).model, 1)
    if not any(isinstance(module, ScatterFeatures) for module in model.modules()):
        return False
    images = dataset.tensors[0]
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model_logits(model, images[start : start + batch_size])
    return True


def step_seconds(
    name: str,
    dataset: TensorDataset,
    batch_size: int,
    repeats: int,
    chunk: int,
    modes: tuple[str, ...] = MODES,
) -> dict[str, float]:
    """Seconds per step in each mode: the fastest of ``repeats`` timed chunks of ``chunk``
    steps, the modes interleaved so that load from other processes hits them alike (the
    minimum is the figure least inflated by that load)."""
    fill_feature_memo(name, dataset)
    chunks = {mode: prepare(name, mode, dataset, batch_size, chunk) for mode in modes}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for attempt in range(repeats + 1):
        for mode, run_chunk in chunks.items():
            started = time.perf_counter()
            run_chunk()
            if attempt:  # the first chunk warms up allocators and hooks
                times[mode].append(time.perf_counter() - started)
    return {mode: min(t) / chunk for mode, t in times.items()}


def profile_mode(name: str, mode: str, dataset: TensorDataset, batch_size: int, chunk: int) -> None:
    """Print torch.profiler's table (operators by their own CPU time) for two chunks of
    ``mode``, after one warm-up chunk: where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    fill_feature_memo(name, dataset)
    run_chunk = prepare(name, mode, dataset, batch_size, chunk)
    run_chunk()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run_chunk()
        run_chunk()
    print(f"{name}, {mode}: {2 * chunk} steps of batch {batch_size}")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["small-cnn", "cnn-medium"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=5, help="steps per timed chunk")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--modes", nargs="+", choices=ALL_MODES, default=list(MODES))
    parser.add_argument(
        "--profile", action="store_true", help="profile each model and mode instead of timing"
    )
    args = parser.parse_args()
    modes = tuple(dict.fromkeys(["plain", *args.modes]))
    torch.set_num_threads(args.threads)
    with np.load(args.data) as arrays:
        images = torch.from_numpy(arrays["train_images"]).float().div(255).unsqueeze(1)
        labels = torch.from_numpy(arrays["train_labels"].reshape(-1).astype(np.int64))
    dataset = TensorDataset(images, labels)  # [0, 1]: run_steps normalises each batch
    if args.profile:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in args.models:
                for mode in modes:
                    profile_mode(name, mode, dataset, args.batch_size, args.chunk)
        return
    print(f"{len(dataset)} images, batch {args.batch_size}, {args.threads} threads")
    print("| model | mode | s / epoch | examples / s | x plain |")
    print("|---|---|---|---|---|")
    for name in args.models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_step = step_seconds(name, dataset, args.batch_size, args.repeats, args.chunk, modes)
        steps_per_epoch = -(-len(dataset) // args.batch_size)
        for mode in modes:
            ratio = per_step[mode] / per_step["plain"]
            rate = args.batch_size / per_step[mode]
            epoch = per_step[mode] * steps_per_epoch
            print(f"| {name} | {mode} | {epoch:.2f} | {rate:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
