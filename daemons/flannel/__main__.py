"""``python -m flotilla.daemons.flannel`` runs flanneld."""

import sys

from .main import main

sys.exit(main())
