"""``python -m parallelize``: the ``parallelize`` command line (see ``--help``)."""

import sys

from ._cli import main

sys.exit(main())
