"""dockline."""
