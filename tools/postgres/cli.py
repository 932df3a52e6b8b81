"""`python cli.py query --sql "select 1"`: the postgres tool from a shell (DATABASE_URL in the
environment)."""

from client import Postgres

from centaur_tools import cli

if __name__ == "__main__":
    cli.run(Postgres)
