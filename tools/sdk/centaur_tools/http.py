"""centaur_tools.http (being written)."""
