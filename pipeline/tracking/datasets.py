"""The run's data as MLflow dataset inputs: the file's train and test arrays (digest, shapes,
dtypes as a tensor schema, context train/test, the split among workers), or the generated
objective's settings when there is no file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.core.files import file_digest, npz_headers
from pipeline.tracking.mapping import flatten


def _tensor_schema(features, targets) -> str:
    import numpy as np
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.types import Schema, TensorSpec

    def spec(shape_dtype):
        shape, dtype = shape_dtype
        return Schema([TensorSpec(np.dtype(dtype), (-1, *shape[1:]))])

    schema = TensorDatasetSchema(spec(features), spec(targets) if targets else None)
    return json.dumps(schema.to_dict())


def dataset_inputs(cfg: Any, data_path: Path | None) -> list:
    """The run's data as MLflow dataset inputs: the file's train (X, y) and test (X_test,
    y_test) arrays with the file's digest, shapes and dtypes, context train/test and the way
    rows are split among workers; a generated objective (no file) is one input of its own."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    ds = cfg.dataset
    split_tags = [InputTag("split", str(ds.split))]
    if ds.split == "dirichlet":
        split_tags.append(InputTag("alpha", str(ds.alpha)))
    if data_path is None:
        oc = flatten(dict(cfg.objective))
        digest = hashlib.sha256(json.dumps(oc, sort_keys=True, default=str).encode()).hexdigest()
        name = f"{cfg.objective.name} (generated)"
        entity = Dataset(name, digest[:16], "code", json.dumps({"objective": oc}, default=str),
                         profile=json.dumps({"generated": True, **oc}, default=str))  # fmt: skip
        return [DatasetInput(entity, [InputTag("mlflow.data.context", "train"), *split_tags])]
    path = Path(data_path).resolve()
    arrays = npz_headers(path)
    digest = file_digest(path)
    source = json.dumps({"uri": str(path)})
    inputs = []
    for context, (x, y) in (("train", ("X", "y")), ("test", ("X_test", "y_test"))):
        if x not in arrays:
            continue
        profile = {"file": path.name, "num_rows": arrays[x][0][0], "features_shape": arrays[x][0]}
        if y in arrays:
            profile["targets_shape"] = arrays[y][0]
        entity = Dataset(ds.name, digest, "local", source,
                         schema=_tensor_schema(arrays[x], arrays.get(y)),
                         profile=json.dumps(profile))  # fmt: skip
        tags = [InputTag("mlflow.data.context", context)]
        inputs.append(DatasetInput(entity, tags + (split_tags if context == "train" else [])))
    return inputs
