"""Reference pipeline for asynchronous versus minibatch SGD."""

import contextlib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
#: the MLflow experiment every run, sweep and study stage logs to unless tracking.experiment is set
EXPERIMENT = "async-sgd"


class ConfigError(ValueError):
    """A configuration or input that cannot run; reported as one line, exit code 2."""


class RunError(RuntimeError):
    """A run that started and cannot go on (a worker failed, a deadline passed); reported as one
    line, exit code 1, with the records written so far kept and the run marked failed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: records flushed, the run marked killed."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signum)
        self.signum = signum
        self.reason = f"terminated ({signal.Signals(signum).name})"


_deferring = 0  # depth of nested signals_deferred blocks
_deferred: list[BaseException] = []  # what a signal raised while deferred


def defer_signal(exc: BaseException) -> bool:
    """Called by a signal handler with what it would raise: inside :func:`signals_deferred` it
    is kept for the block's end (returns True); elsewhere the handler raises it."""
    if _deferring:
        _deferred.append(exc)
        return True
    return False


@contextlib.contextmanager
def signals_deferred():
    """A block a signal must not cut in half (a write to the tracking store, whose sqlite
    transaction an exception from a signal handler would leave open and the store locked): the
    signal's exception is raised when the block ends."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _deferred:
            exc = _deferred[0]
            _deferred.clear()
            raise exc
