"""Moving model weights to and from Flower ``ArrayRecord``s.

Opacus wraps a model in ``GradSampleModule`` whose state-dict keys carry a ``_module.``
prefix; this module is the one place that strips it, so records always use plain keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord
from torch import nn

_OPACUS_PREFIX = "_module."


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside an Opacus wrapper (or the model itself)."""
    inner = getattr(model, "_module", None)
    return inner if isinstance(inner, nn.Module) else model


def model_to_arrays(model: nn.Module) -> ArrayRecord:
    """Detached copy of the model's state dict as an ``ArrayRecord`` with plain keys."""
    state = {
        key.removeprefix(_OPACUS_PREFIX): value.detach().cpu()
        for key, value in unwrap(model).state_dict().items()
    }
    return ArrayRecord(state)


def arrays_to_model(arrays: ArrayRecord, model: nn.Module) -> None:
    """Load weights in place (works on wrapped models; optimizer references stay valid)."""
    unwrap(model).load_state_dict(arrays.to_torch_state_dict(), strict=True)


def named_arrays(parameters: Sequence[np.ndarray], names: Sequence[str]) -> ArrayRecord:
    """Unnamed, ordered parameters (Flower's legacy API) -> an ``ArrayRecord`` by name."""
    if len(parameters) != len(names):
        raise ValueError(f"expected {len(names)} parameter arrays, got {len(parameters)}")
    return ArrayRecord(
        {name: Array(np.asarray(p)) for name, p in zip(names, parameters, strict=True)}
    )
