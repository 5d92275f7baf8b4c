"""log_record_run: one run of params and files in a real temporary sqlite store, FINISHED when
everything was logged, FAILED (and the error raised) when something was not."""

from __future__ import annotations

import pytest

from pipeline.tracking import client_for, log_record_run


def test_a_record_run_is_finished_with_its_params_and_files(tmp_path, mlflow_uri):
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n")
    params = {f"p{i:03d}": i for i in range(150)}  # more than one batch of 100
    params.update({"none": None, "long": "x" * 600})
    run_id = log_record_run(
        "report tables (test)",
        {"sweep": "report", "stage": "report"},
        params,
        [table, tmp_path / "missing.csv"],  # a file that does not exist is left out
        artifact_path="tables",
        uri=mlflow_uri,
    )
    client = client_for(mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "report tables (test)"
    assert run.data.tags["sweep"] == "report" and run.data.tags["stage"] == "report"
    assert client.get_experiment(run.info.experiment_id).name == "async-sgd"
    logged = run.data.params
    assert len(logged) == 152 and logged["p000"] == "0" and logged["p149"] == "149"
    assert logged["none"] == "null" and logged["long"] == "x" * 480 + "... (600 chars)"
    assert [a.path for a in client.list_artifacts(run_id)] == ["tables"]
    assert [a.path for a in client.list_artifacts(run_id, "tables")] == ["tables/table.csv"]


def test_a_record_run_that_fails_is_marked_failed(tmp_path, mlflow_uri):
    table = tmp_path / "table.csv"
    table.write_text("a\n1\n")

    def artifacts():  # the first file is logged, then the next one cannot be produced
        yield table
        raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space left"):
        log_record_run("broken record", {"stage": "broken"}, {"x": 1}, artifacts(),
                       uri=mlflow_uri, experiment="record runs")  # fmt: skip
    client = client_for(mlflow_uri)
    exp = client.get_experiment_by_name("record runs")
    (run,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'broken record'")
    assert run.info.status == "FAILED" and run.data.params == {"x": "1"}
    assert run.data.tags["stage"] == "broken"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["table.csv"]
