"""centaur_tools.testing (being written)."""
