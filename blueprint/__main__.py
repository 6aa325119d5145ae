"""`python -m blueprint` is the `lunara` command."""

from blueprint.cli import main

main()
