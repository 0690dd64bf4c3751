"""flotilla-cloudinit: applies #cloud-config user-data on every boot."""
