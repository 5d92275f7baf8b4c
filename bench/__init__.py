"""Benchmarks: each script writes its figures as JSON into ``bench/results/`` (with the machine,
the versions, the date and the command); ``python -m bench.publish --write`` builds BENCHMARKS.md's
tables and README.md's time figures from those files."""
