"""flotilla-cloudinit: applies #cloud-config user-data on every boot."""

import time as _time

# When the command started loading its own modules. The command reports its own time from
# here, so module loading counts against it; only the interpreter's start-up does not.
LOADED_AT = _time.perf_counter()
