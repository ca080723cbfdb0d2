"""``python -m textgen`` runs the command line."""

from textgen.cli.main import main

main()
