"""centaur_tools.egress (being written)."""
