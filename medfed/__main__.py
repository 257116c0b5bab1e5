"""``python -m medfed`` runs the ``medfed`` command."""

import sys

from medfed.cli import main

sys.exit(main())
