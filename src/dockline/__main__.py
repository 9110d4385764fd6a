"""``python -m dockline`` runs the CLI."""

from dockline.cli import main

main()
