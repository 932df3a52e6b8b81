"""centaur_tools.schema (being written)."""
