"""Weight-standardized convolution (``small-cnn-ws``) and its Opacus per-sample gradients.

``WSConv2d`` standardizes each output filter (zero mean, unit variance) at every forward pass,
as in De et al. 2022 ("Unlocking high-accuracy differentially private image classification
through scale"). Opacus has no grad sampler for it and would fall back to functorch (vmap),
about twice the time of its hooks on ``small-cnn`` (BENCHMARKS.md). The sampler registered
here keeps Opacus' own hooks path: the per-sample gradient with respect to the
*standardized* filters is the ordinary convolution one (Opacus' ``unfold2d`` + einsum, as
``opacus.grad_sample.conv``), and the chain rule through the standardization maps it to the
raw filters, per example and per output channel:

    g_w = (g_hat - mean(g_hat) - w_hat * mean(g_hat * w_hat)) / sqrt(var(w) + eps)

Clipping and noise stay Opacus' (only the per-sample gradients come from here); the test
compares them with one backward pass per example.
"""

from __future__ import annotations

import torch
from opacus.grad_sample import register_grad_sampler
from opacus.utils.tensor_utils import unfold2d
from torch import nn

EPS = 1e-5
_FILTER_DIMS = (1, 2, 3)


class WSConv2d(nn.Conv2d):
    """A convolution whose filters are standardized (zero mean, unit variance per output
    channel) at every forward pass; the bias is left as is. Ungrouped only."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.groups != 1:
            raise ValueError("WSConv2d supports groups = 1 only")

    def standardized_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The standardized filters and the per-filter scale ``sqrt(var + eps)``."""
        weight = self.weight
        mean = weight.mean(dim=_FILTER_DIMS, keepdim=True)
        var = weight.var(dim=_FILTER_DIMS, keepdim=True, unbiased=False)
        scale = torch.sqrt(var + EPS)
        return (weight - mean) / scale, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        standardized, _ = self.standardized_weight()
        return self._conv_forward(x, standardized, self.bias)


@register_grad_sampler(WSConv2d)
def compute_ws_conv_grad_sample(
    layer: WSConv2d, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of a ``WSConv2d``'s raw filters and bias (Opacus' hooks API)."""
    x = activations[0].to(backprops.dtype)
    n = x.shape[0]
    grads: dict[nn.Parameter, torch.Tensor] = {}
    if n == 0:
        grads[layer.weight] = torch.zeros_like(layer.weight).unsqueeze(0)
        if layer.bias is not None and layer.bias.requires_grad:
            grads[layer.bias] = torch.zeros_like(layer.bias).unsqueeze(0)
        return grads
    columns = unfold2d(
        x,
        kernel_size=layer.kernel_size,
        padding=layer.padding,
        stride=layer.stride,
        dilation=layer.dilation,
    )
    backprops = backprops.reshape(n, -1, columns.shape[-1])
    if layer.weight.requires_grad:
        grad_hat = torch.einsum("noq,npq->nop", backprops, columns).reshape(n, *layer.weight.shape)
        with torch.no_grad():
            w_hat, scale = layer.standardized_weight()
        dims = tuple(d + 1 for d in _FILTER_DIMS)
        centred = grad_hat - grad_hat.mean(dim=dims, keepdim=True)
        along_w = w_hat * (grad_hat * w_hat).mean(dim=dims, keepdim=True)
        grads[layer.weight] = (centred - along_w) / scale
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = backprops.sum(dim=2)
    return grads
