"""``python -m sims`` is the ``weightmirror`` command."""
import sys

from sims.cli import main

sys.exit(main())
