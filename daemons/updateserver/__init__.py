"""flotilla-update-server: an Omaha server with groups, channels and rollout policy (#14)."""
