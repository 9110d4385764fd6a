"""dockline.pipeline: the wiring. Reads config, composes concrete stage implementations, runs them.

Stage packages never import each other; this layer (and the CLI above it) is where they meet.
"""
