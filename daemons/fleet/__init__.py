"""fleet: one init system for the whole cluster (engine, agent, API v1)."""
