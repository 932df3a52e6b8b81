"""centaur_tools.__init__ (being written)."""
