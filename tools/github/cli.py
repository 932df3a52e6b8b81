"""`python cli.py <method> --arg value`: the github tool from a shell (GITHUB_TOKEN in the
environment holds a real token there)."""

from client import GitHub

from centaur_tools import cli

if __name__ == "__main__":
    cli.run(GitHub)
