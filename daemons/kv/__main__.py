"""``python -m flotilla.daemons.kv`` runs kvd."""

import sys

from flotilla.daemons.kv.server import main

sys.exit(main())
