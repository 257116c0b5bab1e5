"""One module per ``medfed`` subcommand; each exposes ``register(subparsers)``.

``demo`` (synthetic hospitals, end to end), ``site`` (ingest and check a hospital's folder),
``simulate`` (a named scenario), ``certs`` (CA, SuperLink certificate, node keys, gateway).
"""

__all__ = ["certs", "demo", "simulate", "site"]
