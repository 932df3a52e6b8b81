"""centaur_tools.cli (being written)."""
