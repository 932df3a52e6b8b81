"""`python cli.py fetch --url https://example.com`: the http tool from a shell."""

from client import Http

from centaur_tools import cli

if __name__ == "__main__":
    cli.run(Http)
