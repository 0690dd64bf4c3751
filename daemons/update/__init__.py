"""The update engine: atomic A/B updates of /usr, driven by an Omaha server.

Pure pieces first (``codes``, ``gptprio``, ``omaha``, ``payload``, ``status``), the shells
that do HTTP, block devices and D-Bus around them.
"""
