"""``python -m flotilla.daemons.updateserver``: the server without an installed script."""

import sys

from .main import main

sys.exit(main())
