"""MLflow's own log lines (the store's creation, the system-metrics monitor, migrations): into the
run's log file, not onto the terminal; their warnings and errors on both.

On import MLflow gives its loggers (``mlflow``, and ``alembic``, ``sqlalchemy.engine``, ``huey``)
one handler of its own, on stderr, and stops them from propagating, so Hydra's job log
(``<run dir>/train.log``) never sees their lines while the terminal gets every INFO line.
``quiet_library_logs`` keeps that handler for warnings and errors only and adds one that hands
each record to the root logger's log files (Hydra's job log, where a run has one).

Two loggers go to the log files only, warnings included (``FILE_ONLY_LOGGERS``): urllib3's line
for each retried request (a tracking server that is down: several per call) and MLflow's
system-metrics monitor (which stops with a warning when the store fails). The tracker says a
failing store once, in one line of its own (:mod:`pipeline.tracking.run`).
"""

from __future__ import annotations

import logging

#: the loggers MLflow configures that write to the terminal during a run or a store's creation
LIBRARY_LOGGERS = ("mlflow", "alembic")
#: the least severe of their lines still shown on the terminal
CONSOLE_LEVEL = logging.WARNING
#: loggers whose lines go to the run's log file and never to the terminal
FILE_ONLY_LOGGERS = ("urllib3.connectionpool", "mlflow.system_metrics")


class ToLogFiles(logging.Handler):
    """Hands a record to the root logger's file handlers, looked up at each record (a sweep's
    worker process runs job after job, each with a log file of its own)."""

    def emit(self, record: logging.LogRecord) -> None:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)


def quiet_library_logs() -> None:
    """MLflow's console handler from ``CONSOLE_LEVEL`` up, every line into the run's log file;
    idempotent. What MLflow logs at all is still its own setting (``MLFLOW_LOGGING_LEVEL``)."""
    import mlflow  # noqa: F401  (configures its loggers when first imported)

    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            console = isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            )
            if console and handler.level < CONSOLE_LEVEL:
                handler.setLevel(CONSOLE_LEVEL)
        if not any(isinstance(h, ToLogFiles) for h in logger.handlers):
            logger.addHandler(ToLogFiles())
    for name in FILE_ONLY_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = False
        if not any(isinstance(h, ToLogFiles) for h in logger.handlers):
            logger.addHandler(ToLogFiles())
