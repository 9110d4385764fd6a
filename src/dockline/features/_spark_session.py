"""The process's local Spark session for the Spark executor: started on first use, reused.

pyspark is imported lazily, here and in ``spark`` only: ``pip install 'dockline[spark]'`` and
a Java runtime.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dockline.core.errors import ConfigError

__all__ = ["JAVA_HINT", "java_available", "quiet", "spark_session"]

JAVA_HINT = "install a Java runtime (17+), e.g. `apt-get install default-jre-headless`"
_LOG4J = "rootLogger.level = error\nrootLogger.appenderRef.stdout.ref = console\n"
_session: Any = None
_lock = threading.Lock()


def java_available() -> bool:
    """Whether a ``java`` binary is on the PATH or under ``JAVA_HOME``."""
    home = os.environ.get("JAVA_HOME")
    return shutil.which("java") is not None or bool(home and Path(home, "bin", "java").exists())


@contextmanager
def quiet() -> Iterator[None]:
    # pyspark warns about the pandas version on Arrow transfers we do without pandas
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark\..*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pyspark\..*")
        yield


def spark_session() -> Any:
    """The process's local Spark session: started on first use, then reused.

    ``local[2]``, few shuffle partitions, UTC, no UI, error-level logs, ANSI mode off (SQL null
    semantics on division by zero, as in DuckDB), a modest driver memory.
    """
    global _session
    with _lock:
        if _session is not None and not _session.sparkContext._jsc.sc().isStopped():
            return _session
        if not java_available():
            raise ConfigError(f"the Spark engine needs Java: {JAVA_HINT}", where="java")
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:
            raise ConfigError(
                "the Spark engine needs pyspark: pip install 'dockline[spark]'"
            ) from exc
        conf_dir = Path(tempfile.mkdtemp(prefix="dockline-spark-"))
        log4j = conf_dir / "log4j2.properties"
        log4j.write_text(
            _LOG4J + "appender.console.type = Console\nappender.console.name = console\n"
            "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = %d %p %c: %m%n\n"
        )
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        with quiet():
            _session = (
                SparkSession.builder.master("local[2]")
                .appName("dockline")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.shuffle.partitions", "2")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.ansi.enabled", "false")
                .config("spark.driver.memory", "1g")
                .config("spark.driver.host", "127.0.0.1")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.local.dir", str(conf_dir))
                .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j}")
                .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                .getOrCreate()
            )
        _session.sparkContext.setLogLevel("ERROR")
        return _session
