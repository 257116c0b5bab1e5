"""Harnesses for tests and benchmarks, not for production use.

They live at the top of the import graph (they may import every other package) and ship in the
wheel only so that ``benchmarks/`` and ``tests/`` can share them.

- ``federation``: ``LocalFederation``, a whole TLS deployment (SuperLink, SuperNodes, optional
  nginx gateway) as real processes on 127.0.0.1.
- ``faults``: client mods that corrupt one site's updates or make it raise.
- ``timing``: ``scaled(seconds)``, every test wait scaled to the machine's measured speed and
  ``MEDFED_TEST_TIMEOUT_SCALE``.
"""
