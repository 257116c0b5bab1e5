"""The site's side of secure aggregation (Flower SecAgg+), isolated on Flower's legacy API.

Why legacy: in flwr 1.42 SecAgg+ exists only as ``secaggplus_mod`` around a ``client_fn`` /
``NumPyClient`` ClientApp, driven by the server's ``SecAggPlusWorkflow``. Everything else in
medfed uses the Message API, so this module is the one place that speaks the legacy format;
it converts to and from it and calls the same handlers as ``client.app`` (same data
loading, same Opacus DP-SGD in ``client.train``, same privacy state in ``context.state``).

Order at a site: DP-SGD (clipping + Gaussian noise) inside ``handle_train`` produces the
noised weights; only then does ``secaggplus_mod`` quantise and mask them. The server can
unmask only the sum over the sites.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from common import keys
from common.config import MedfedConfig
from common.errors import ConfigError
from common.models import build_run_model
from common.params import named_arrays
from common.round_settings import decode_round_settings

Scalars = dict[str, bool | bytes | float | int | str]
Handler = Callable[[RecordDict, Context], RecordDict]


@dataclass(frozen=True)
class SiteHandlers:
    """The Message-API handlers (``client.app``) that do the real work at a site."""

    train: Handler
    evaluate: Handler


def is_secagg_message(content: RecordDict) -> bool:
    """Whether a message belongs to Flower's SecAgg+ workflow (legacy format).

    Medfed's Message-API instructions always carry the round settings under ``config``;
    the legacy workflow's carry ``secaggplus_configs`` (training stages) or ``fitins.*`` /
    ``evaluateins.*`` records instead.
    """
    return RECORD_KEY_CONFIGS in content or keys.CONFIG not in content


def parameter_names(config: MedfedConfig) -> list[str]:
    """The model's state-dict keys, in the order the legacy path lists its arrays."""
    return list(build_run_model(config, config.data.channels).state_dict())


class SiteClient(NumPyClient):
    """Legacy adapter: converts FitIns/EvaluateIns and calls ``client.app``'s handlers."""

    def __init__(self, context: Context, handlers: SiteHandlers) -> None:
        self._context = context
        self._handlers = handlers

    def _content(
        self, parameters: list[np.ndarray], settings: Scalars
    ) -> tuple[RecordDict, MedfedConfig]:
        """The Message-API content for the handlers, and the round's config (decoded once)."""
        config = decode_round_settings(settings).config
        content = RecordDict(
            {
                keys.ARRAYS: named_arrays(parameters, parameter_names(config)),
                keys.CONFIG: ConfigRecord(settings),  # type: ignore[arg-type]
            }
        )
        return content, config

    def fit(
        self, parameters: list[np.ndarray], config: Scalars
    ) -> tuple[list[np.ndarray], int, Scalars]:
        """Local DP-SGD; the weights returned here are masked by ``secaggplus_mod``."""
        content, settings = self._content(parameters, config)
        reply = self._handlers.train(content, self._context)
        metrics = dict(reply[keys.METRICS])
        num_examples = int(metrics[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
        max_weight = settings.secagg.max_weight
        if num_examples > max_weight:  # SecAgg+ would clip this site's weights silently
            raise ConfigError(
                f"this site has {num_examples} training images, more than "
                f"secagg.max-weight={max_weight:g}: raise it in the run config"
            )
        arrays = reply[keys.ARRAYS].to_numpy_ndarrays()
        return arrays, num_examples, metrics  # type: ignore[return-value]

    def evaluate(self, parameters: list[np.ndarray], config: Scalars) -> tuple[float, int, Scalars]:
        """Evaluate the global model on the site's held-out split (not masked)."""
        content, _ = self._content(parameters, config)
        reply = self._handlers.evaluate(content, self._context)
        metrics = dict(reply[keys.METRICS])
        loss = float(metrics[keys.EVAL_LOSS])  # type: ignore[arg-type]
        return loss, int(metrics[keys.NUM_EXAMPLES]), metrics  # type: ignore[arg-type, return-value]


def build_secagg_client_app(
    handlers: SiteHandlers, outer_mods: Sequence[Mod] = (), inner_mods: Sequence[Mod] = ()
) -> ClientApp:
    """The legacy ClientApp with ``secaggplus_mod``.

    ``outer_mods`` see what leaves the site (masked vectors, key shares); ``inner_mods`` see
    the site's update before masking (used by tests to prove the server never gets it).
    """

    def client_fn(context: Context) -> Client:
        return SiteClient(context, handlers).to_client()

    return ClientApp(client_fn=client_fn, mods=[*outer_mods, secaggplus_mod, *inner_mods])


@dataclass(frozen=True)
class SecAggRouter:
    """A Message-API mod: messages of the SecAgg+ workflow go to the SecAgg+ app."""

    handlers: SiteHandlers

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if not is_secagg_message(msg.content):
            return call_next(msg, context)
        return build_secagg_client_app(self.handlers)(msg, context)
