"""fleetctl: the command line for the fleet API v1."""
