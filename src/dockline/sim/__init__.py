"""dockline.sim: a seeded, vectorized bike-share city that serves GBFS and writes archives.

It is the platform's test bed and its policy environment: stations in zones, trip demand by
zone pair × hour-of-week × weather, failed rentals and diverted returns, trucks; a GBFS v2.3 and
v3.0 server with counted fault injection; a writer for the Divvy archive layout.

>>> city = City(CityConfig(stations=100, seed=7))
>>> metrics = city.run(120)
>>> city.total_bikes() == City(CityConfig(stations=100, seed=7)).total_bikes()
True
"""

from dockline.sim.archive import ArchiveSummary, write_archive
from dockline.sim.city import City, CityConfig, CityMetrics, Move, StationStatus, Weather
from dockline.sim.faults import (
    FAULT_NAMES,
    REASON_BY_FAULT,
    FaultConfig,
    FaultCounts,
    FaultInjector,
    FaultPlan,
    parse_faults,
)
from dockline.sim.gbfs import (
    GbfsVersion,
    dumps,
    render_gbfs,
    render_station_information,
    render_station_status,
    render_system_information,
    render_vehicle_types,
)
from dockline.sim.server import CLOCK_HEADER, SimServer

__all__ = [
    "CLOCK_HEADER",
    "FAULT_NAMES",
    "REASON_BY_FAULT",
    "ArchiveSummary",
    "City",
    "CityConfig",
    "CityMetrics",
    "FaultConfig",
    "FaultCounts",
    "FaultInjector",
    "FaultPlan",
    "GbfsVersion",
    "Move",
    "SimServer",
    "StationStatus",
    "Weather",
    "dumps",
    "parse_faults",
    "render_gbfs",
    "render_station_information",
    "render_station_status",
    "render_system_information",
    "render_vehicle_types",
    "write_archive",
]
