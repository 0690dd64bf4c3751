"""Flotilla's daemons, one subpackage per service, plus the few modules they all share."""

__version__ = "0.1.0"
