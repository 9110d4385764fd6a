"""Database URLs for MLflow's and Optuna's SQLAlchemy stores."""

from __future__ import annotations

import importlib.util

__all__ = ["sqlalchemy_url"]


def sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` with the driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; the ``postgres`` extra installs
    psycopg2, so without psycopg 3 the URL names psycopg2 explicitly. Other URLs pass through.
    """
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare) and importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url
