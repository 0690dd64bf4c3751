"""locksmith: cluster-wide reboot coordination (locksmithd, locksmithctl).

``semaphore`` (pure value and operations, locksmith 0.6's JSON), ``window`` and ``decide``
(pure), ``config``; then the shells: ``store`` (the semaphore over the shared KV client),
``wall``, ``ctl`` (locksmithctl) and ``main`` (locksmithd).
"""

VERSION = "0.6.2+flotilla"
