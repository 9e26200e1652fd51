"""``python -m weightmirror`` is the ``weightmirror`` command."""
import sys

from weightmirror.sims.cli import main

sys.exit(main())
