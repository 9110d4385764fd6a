"""dockline.core: time and clock, errors, typed contracts, ports and config shared by all stages.

Stage packages import only this package (and third-party libraries); they meet through its
contracts and ports.
"""
