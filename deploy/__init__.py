"""Real deployment: what a coordinator and the hospitals run, with TLS and node authentication.

- ``certs``: the federation's CA, the SuperLink certificate, each hospital's node key.
- ``commands``: the exact Flower command lines (SuperLink, SuperNode, register, run).
- ``gateway``: the nginx config that exposes only the SuperNode's Fleet API routes.
"""
