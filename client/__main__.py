"""`python -m client`: the command line."""

from client.cli import entry

entry()
