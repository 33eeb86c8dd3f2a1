"""``python -m inference.studies.cli``: the ``lvm`` command."""

import sys

from inference.studies.cli import main

sys.exit(main())
