"""``python -m flotilla.daemons.fleet`` runs fleetd."""

import sys

from .server import main

sys.exit(main())
