"""``python -m pipeline.check_rule``: runs :func:`pipeline.check_rule.cli.main`."""

import sys

from pipeline.check_rule.cli import main

if __name__ == "__main__":
    sys.exit(main())
