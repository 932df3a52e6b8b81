"""`python cli.py <method> --arg value`: the slack tool from a shell (the tokens in the
environment hold real values there)."""

from client import Slack

from centaur_tools import cli

if __name__ == "__main__":
    cli.run(Slack)
