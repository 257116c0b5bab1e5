"""Each image's 3x3 convolution weight gradient: unfold + one batched product vs nine shifts.

Issue 19 asks for a DP-SGD step at <= 1.2x a plain one. On ``small-cnn`` nearly all of what
a DP step adds is the per-sample weight gradients of its three convolutions, which torch's
expanded weights (Opacus' ``ew``, the product's default) and Opacus' hooks compute the same
way: unfold the layer's input (``im2col``) and multiply it with the output gradient, one
batched product per layer. This script times that against one alternative that skips the
unfold: the gradient for each of the nine kernel offsets is a batched product of the output
gradient with the input shifted by that offset. Both give the same numbers (printed: their
largest difference). Shapes are ``small-cnn``'s three convolutions at batch 256 on 28x28
images. Not a product path: a measurement of whether replacing the kernel would pay.

    PYTHONPATH=. .venv/bin/python benchmarks/conv_grad_sample.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

# (batch, in channels, out channels, side) of small-cnn's convolutions at 28x28 input
LAYERS = ((256, 1, 16, 28), (256, 16, 32, 14), (256, 32, 64, 7))


def by_unfold(inputs: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """torch's expanded weights / Opacus: im2col, then one batched product."""
    n, c, _, _ = inputs.shape
    o = grad_out.shape[1]
    unfolded = F.unfold(inputs, 3, padding=1)  # n, c*9, h*w
    return torch.einsum("noq,npq->nop", grad_out.reshape(n, o, -1), unfolded).view(n, o, c, 3, 3)


def by_shifts(inputs: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """Nine batched products, one per kernel offset, on shifted views of the input."""
    n, c, h, w = inputs.shape
    o = grad_out.shape[1]
    padded = F.pad(inputs, (1, 1, 1, 1))
    flat = grad_out.reshape(n, o, h * w)
    parts = [
        torch.bmm(flat, padded[:, :, i : i + h, j : j + w].reshape(n, c, h * w).transpose(1, 2))
        for i in range(3)
        for j in range(3)
    ]
    return torch.stack(parts, -1).view(n, o, c, 3, 3)


def milliseconds(
    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    grad_out: torch.Tensor,
    repeats: int,
) -> float:
    """The fastest of ``repeats`` calls, after one warm-up call."""
    function(inputs, grad_out)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function(inputs, grad_out)
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(
        "| layer (batch, in, out, side) | unfold + product ms | nine shifts ms | max difference |"
    )
    print("|---|---|---|---|")
    totals = [0.0, 0.0]
    for n, c, o, side in LAYERS:
        inputs = torch.randn(n, c, side, side, generator=generator)
        grad_out = torch.randn(n, o, side, side, generator=generator)
        difference = (by_unfold(inputs, grad_out) - by_shifts(inputs, grad_out)).abs().max()
        unfold_ms = milliseconds(by_unfold, inputs, grad_out, args.repeats)
        shifts_ms = milliseconds(by_shifts, inputs, grad_out, args.repeats)
        totals[0] += unfold_ms
        totals[1] += shifts_ms
        print(f"| {n}, {c}, {o}, {side} | {unfold_ms:.2f} | {shifts_ms:.2f} | {difference:.1e} |")
    print(f"| all three | {totals[0]:.2f} | {totals[1]:.2f} | |")


if __name__ == "__main__":
    main()
