"""Grad-CAM heat maps (Selvaraju et al. 2017) with torch hooks, and overlay PNGs.

The maps come from the model's last ``nn.Conv2d`` (in registration order: the deepest one in
every model of ``common.models``), or from the layer a model names as its ``cam_layer`` (one
without convolutions: ``scatter-linear``'s normalised scattering maps): a forward hook keeps
its output activations ``A`` and a tensor hook their gradients; each channel is weighted by
the spatial mean of its gradient for the explained class, the weighted sum goes through a ReLU,
is resized to the input size (bilinear) and scaled to [0, 1] per image. Inputs are images in
[0, 1], as everywhere (normalised by ``preprocess.model_logits``). No library beyond torch is
needed; matplotlib draws the overlays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.data.preprocess import model_logits


def last_conv_layer(model: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` registered in ``model`` (the one Grad-CAM looks at)."""
    layers = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no 2D convolution to explain")
    return layers[-1]


def explained_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM looks at: the model's ``cam_layer`` where it names one, else
    :func:`last_conv_layer`."""
    layer = getattr(model, "cam_layer", None)
    return layer if isinstance(layer, nn.Module) else last_conv_layer(model)


def grad_cam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor | None = None
) -> np.ndarray:
    """Heat maps (N, H, W) in [0, 1] of ``targets`` (default: the predicted classes).

    ``images`` are (N, C, H, W) in [0, 1]. A map that is zero everywhere (no positive
    evidence for the class) stays zero. Sequence models (``(N, C, D, H, W)`` stacks) are
    refused: their last convolution sees one frame at a time, so there is no single map.
    """
    if images.ndim != 4:
        raise ValueError(
            f"Grad-CAM explains 2D models on (N, C, H, W) images, not {images.ndim}-D input "
            "(sequence models on stacks are not supported)"
        )
    layer = explained_layer(model)
    saved: dict[str, torch.Tensor] = {}

    def keep(
        _module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        if not output.requires_grad:  # maps of a fixed transform, with no weight before them
            output = output.detach().requires_grad_(True)
        saved["activations"] = output
        output.register_hook(lambda grad: saved.__setitem__("gradients", grad))
        return output

    was_training = model.training
    model.eval()
    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            inputs = images.detach().clone().requires_grad_(True)
            logits = model_logits(model, inputs)
            chosen = logits.argmax(dim=1) if targets is None else targets.to(torch.long)
            model.zero_grad(set_to_none=True)
            logits.gather(1, chosen.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
        model.train(was_training)
    activations, gradients = saved["activations"].detach(), saved["gradients"].detach()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam.squeeze(1)
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).numpy()


def write_overlay(image: torch.Tensor, heat: np.ndarray, path: Path, title: str = "") -> None:
    """Draw ``heat`` (H, W) over ``image`` (C, H, W in [0, 1]) and save it as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pixels = image.detach().cpu().numpy()
    shown = pixels[0] if pixels.shape[0] == 1 else np.transpose(pixels[:3], (1, 2, 0))
    figure = Figure(figsize=(4, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 0.92) if title else (0, 0, 1, 1))
    axes.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
    axes.imshow(heat, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0, interpolation="bilinear")
    axes.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=10, y=0.98)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
