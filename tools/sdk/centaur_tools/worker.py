"""centaur_tools.worker (being written)."""
