"""``model.pt``: the trained global model with what it takes to use it on new images.

One module writes and reads the format, so the coordinator (``server.rundir``) and a site
scoring new studies (``client.predict``) agree on it. Keys:

- ``state_dict``, ``model`` (registry name), ``num_classes``, ``in_channels``,
  ``image_size``, ``round``: the network;
- ``threshold``: the operating threshold on the positive-class probability (binary tasks),
  ``None`` when none was chosen (then 0.5; multi-class tasks use the arg-max);
- ``data``: the run's ``data.*`` settings with their dashed names (``image-size``,
  ``frames``, ``resize``, ``channels``, ``class-names``, ...), so new images are decoded and
  preprocessed exactly as the sites' training images were; ``modalities``, ``photometric``
  and ``sizes`` (lists) when known.

Files written before ``threshold`` and ``data`` existed still load: the preprocessing then
falls back to the defaults (with the saved input size and channels), and ``defaulted`` says so.
The file is read with ``torch.load(weights_only=True)``: tensors and plain values only, never
pickled code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.config import DataConfig, MedfedConfig, Scalar, parse_class_names
from common.errors import ConfigError
from common.models import FUSION_REGISTRY, MODEL_REGISTRY

MODEL_FILE = "model.pt"
FACT_KEYS = ("modalities", "photometric", "sizes")  # what the training images were, if known
_REQUIRED = ("state_dict", "model", "num_classes", "in_channels", "image_size")


def data_settings(config: MedfedConfig) -> dict[str, Scalar]:
    """The run's ``data.*`` settings as ``{dashed-name: value}`` (``to_flat`` without prefix)."""
    prefix = f"{DataConfig.SECTION}."
    return {
        key.removeprefix(prefix): value
        for key, value in config.to_flat().items()
        if key.startswith(prefix)
    }


def model_payload(
    state_dict: Mapping[str, torch.Tensor],
    config: MedfedConfig,
    server_round: int,
    threshold: float | None = None,
) -> dict[str, Any]:
    """What ``model.pt`` holds for a global model after ``server_round``."""
    return {
        "state_dict": dict(state_dict),
        "model": config.model.name,
        "num_classes": config.model.num_classes,
        "in_channels": config.data.channels,
        "image_size": config.data.image_size,
        "round": server_round,
        "threshold": None if threshold is None else float(threshold),
        "data": data_settings(config),
    }


@dataclass(frozen=True)
class SavedModel:
    """A loaded ``model.pt``: the network, its preprocessing and its operating threshold."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    model: str
    num_classes: int
    in_channels: int
    image_size: int
    round: int | None
    threshold: float | None
    data: DataConfig
    facts: dict[str, list[str]] = field(default_factory=dict)
    defaulted: bool = False  # an older file without ``data``: preprocessing defaults used

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in label-index order."""
        return parse_class_names(self.data.class_names)

    def build(self) -> nn.Module:
        """The network with the saved weights, in eval mode."""
        network = MODEL_REGISTRY[self.model](self.in_channels, self.num_classes)
        try:
            network.load_state_dict(self.state_dict, strict=True)
        except RuntimeError:
            raise ConfigError(
                f"{self.path}: the saved weights do not fit a '{self.model}' model "
                f"({self.in_channels} channels, {self.num_classes} classes)"
            ) from None
        return network.eval()


def find_model_file(model_or_run: Path) -> Path:
    """``model_or_run`` itself, or the ``model.pt`` inside a run directory."""
    path = Path(model_or_run).expanduser()
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file (give a model.pt or a run directory)")
    return path


def load_saved_model(model_or_run: Path | str) -> SavedModel:
    """Read a ``model.pt`` (or a run directory's); one-line ``ConfigError`` if unusable."""
    path = find_model_file(Path(model_or_run))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise ConfigError(
            f"{path}: not a readable medfed model file ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or any(key not in payload for key in _REQUIRED):
        raise ConfigError(f"{path}: not a medfed model file (missing {', '.join(_REQUIRED)})")
    name = str(payload["model"])
    if name in FUSION_REGISTRY:
        raise ConfigError(
            f"{path}: '{name}' also needs the patient's clinical variables; predict and "
            "grad-cam take image-only models"
        )
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"{path}: unknown model '{name}' (known: {', '.join(MODEL_REGISTRY)})")
    num_classes = int(payload["num_classes"])
    raw = payload.get("data")
    settings = dict(raw) if isinstance(raw, Mapping) else {}
    data = _data_config(path, settings, payload, name, num_classes)
    threshold = payload.get("threshold")
    if threshold is not None:
        threshold = float(threshold)
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise ConfigError(f"{path}: saved threshold {threshold} is not a probability")
    return SavedModel(
        path=path,
        state_dict=dict(payload["state_dict"]),
        model=name,
        num_classes=num_classes,
        in_channels=int(payload["in_channels"]),
        image_size=int(payload["image_size"]),
        round=None if payload.get("round") is None else int(payload["round"]),
        threshold=threshold,
        data=data,
        facts={key: _as_list(settings[key]) for key in FACT_KEYS if settings.get(key)},
        defaulted=not settings,
    )


def _data_config(
    path: Path, settings: dict[str, Any], payload: dict[str, Any], model: str, num_classes: int
) -> DataConfig:
    """The saved preprocessing as a checked ``DataConfig`` (defaults for an older file)."""
    known = {f.name.replace("_", "-") for f in dataclasses.fields(DataConfig)}
    flat: dict[str, Any] = {f"data.{k}": v for k, v in settings.items() if k in known}
    flat.setdefault("data.image-size", int(payload["image_size"]))
    flat.setdefault("data.channels", int(payload["in_channels"]))
    if "data.class-names" not in flat and num_classes != 2:
        flat["data.class-names"] = ",".join(f"class-{i}" for i in range(num_classes))
    flat["model.num-classes"] = num_classes
    flat["model.name"] = model  # frames=stack goes with a sequence model only
    # scoring takes no gradient: training-only rules (DP refuses BatchNorm) do not apply
    flat["privacy.enabled"] = False
    try:
        return MedfedConfig.from_flat(flat).data
    except ConfigError as problem:
        raise ConfigError(f"{path}: saved preprocessing settings are unusable: {problem}") from None


def _as_list(value: Any) -> list[str]:
    values = value if isinstance(value, list | tuple) else str(value).split(",")
    return [str(v).strip() for v in values if str(v).strip()]
