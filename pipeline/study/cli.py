"""``python -m pipeline.study <stage>``: one stage of the study on the profile ``params.yaml``
selects; a study error (a bad profile, a launcher ``$ASGD_STUDY_LAUNCHER`` that does not exist
or is not installed, a failed sweep) is one line on stderr and exit code 1. The stage's earlier
outputs are set aside and its sweeps reuse their finished jobs (``multirun.reusing``)."""

from __future__ import annotations

import argparse
import sys

from pipeline.study.multirun import launcher, reusing, use_searchpath
from pipeline.study.profile import StudyError, load_profile, results_dir
from pipeline.study.stages import OUTPUTS, STAGES


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipeline.study")
    p.add_argument("stage", choices=list(STAGES))
    a = p.parse_args(argv)
    try:
        profile = load_profile()
        use_searchpath(profile["searchpath"])
        launcher()  # a bad $ASGD_STUDY_LAUNCHER is one line before any sweep
        with reusing(*(results_dir(profile) / d for d in OUTPUTS[a.stage])):
            STAGES[a.stage](profile)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
