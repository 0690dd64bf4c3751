"""flotilla-ignition: applies an Ignition v3 config to a root once, at first boot."""
