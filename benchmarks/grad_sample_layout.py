"""Do Opacus' per-sample gradients survive channels-last weights? (issue 19, DP cost)

``benchmarks/dp_cost.py --modes plain-cl hooks-cl`` shows channels-last weights speeding up
both plain SGD and Opacus hooks on CPU. This script checks whether the per-sample gradients
are still right: the same seeded ``small-cnn`` and batch, wrapped in Opacus'
``GradSampleModule`` (hooks), with contiguous and with channels-last weights; it prints the
largest difference of every parameter's ``grad_sample``. Float round-off is ~1e-7.

    PYTHONPATH=. .venv/bin/python benchmarks/grad_sample_layout.py
"""

from __future__ import annotations

import warnings

import torch
from opacus import GradSampleModule

from common.config import ModelConfig
from common.models import build_model


def per_sample_grads(channels_last: bool) -> dict[str, torch.Tensor]:
    """``grad_sample`` of every parameter for one fixed batch."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(8, 1, 16, 16, generator=generator)
    labels = torch.randint(0, 2, (8,), generator=generator)
    torch.manual_seed(0)
    model = build_model(ModelConfig(), 1)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    wrapped = GradSampleModule(model)
    torch.nn.functional.cross_entropy(wrapped(images), labels).backward()
    return {name: p.grad_sample.clone() for name, p in wrapped.named_parameters()}


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        contiguous, channels_last = per_sample_grads(False), per_sample_grads(True)
    for name, value in contiguous.items():
        difference = (value - channels_last[name]).abs().max().item()
        print(f"{name:32s} max |difference| {difference:.2e}")


if __name__ == "__main__":
    main()
