"""``python -m chanprune.cli``: same as the ``chanprune`` console command."""

import sys

from . import main

sys.exit(main())
