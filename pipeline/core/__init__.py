"""The engine-independent core: the server rules (``methods/``), the parameter server, worker-time
models, theory, data splits, evaluation, run records and traces. numpy and torch only: nothing
here imports Hydra, MLflow, an engine or a config schema."""
