"""``python -m flotilla.daemons.kvctl`` runs kvctl."""

import sys

from flotilla.daemons.kvctl.main import main

sys.exit(main())
