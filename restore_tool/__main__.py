"""`python -m restore_tool` runs the CLI."""

from .cli import main

main()
