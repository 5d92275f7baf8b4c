"""Reference pipeline for asynchronous versus minibatch SGD."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"


class ConfigError(ValueError):
    """A configuration or input that cannot run; reported as one line, exit code 2."""
