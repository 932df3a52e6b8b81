"""centaur_tools.context (being written)."""
