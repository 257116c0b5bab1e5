"""Values from a SuperNode's node config (``--node-config 'k=v …'``), parsed one way.

Flower hands node-config values over as TOML scalars (bool, int, float) or strings; a bad
value is a one-line ``ConfigError`` naming the node-config key, never a silent default.
"""

from __future__ import annotations

from common.errors import ConfigError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def refuse_node_value(key: str, value: object, allowed: str) -> ConfigError:
    """The one-line error for a node-config value that cannot be used."""
    return ConfigError(f"node config '{key}' = {value!r} is not allowed: expected {allowed}")


def node_bool(key: str, value: object) -> bool:
    """A true/false node-config value (``true``, ``1``, ``yes``, ``on`` and their opposites)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise refuse_node_value(key, value, "true or false")


def node_count(key: str, value: object) -> int:
    """A whole number >= 0 node-config value (TOML integer, or its text)."""
    if isinstance(value, bool):
        raise refuse_node_value(key, value, "a whole number >= 0")
    try:
        count = int(value) if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        count = -1
    if count < 0:
        raise refuse_node_value(key, value, "a whole number >= 0")
    return count
