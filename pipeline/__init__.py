"""Reference pipeline for asynchronous versus minibatch SGD."""

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
