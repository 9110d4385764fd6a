"""Fixtures for the deployment-file tests.

The dashboard's metric names are checked against a real scrape of the serving app over the
serving tests' simulated city: ``city`` from tests/serve/test_serve_monitoring.py, reused here
rather than rebuilt.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from test_serve_monitoring import city  # noqa: F401  (the fixture, reused)
