"""One module per ``medfed`` subcommand; each exposes ``register(subparsers)``."""
