"""objective=torch_module: a user's module (tests/models/user_pkg.py) wrapped like the built-in
models: its gradient against plain autograd on the module itself, batched gradients against
one by one, seeded initial weights, a run through the command line, an ordered real run equal
to the simulated one, and bad targets and losses as one line, exit code 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.compose.build import build_objective
from pipeline.runner import run_experiment
from tests.conftest import compose_cfg, run_cli
from tests.models.user_pkg import TwoLayer, make_data, make_regression

TARGET = "objective.module._target_=tests.models.user_pkg.TwoLayer"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "labelled.npz"
    np.savez(path, **make_data())
    return path


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "regression.npz"
    X, y, Xt, yt = make_regression()
    np.savez(path, X=X, y=y, X_test=Xt, y_test=yt)
    return path


def args(path, *extra: str) -> list[str]:
    return ["~experiment", "objective=torch_module", TARGET, "dataset=npz",
            f"dataset.path={path}", "optimizer=asgd", "optimizer.lr=0.1", "batch_size=8",
            "topology.n_workers=2", "tracking=none", "progress=off", "budget.gradients=200",
            *extra]  # fmt: skip


def objective(path, *extra: str):
    cfg = compose_cfg(*args(path, "objective.dtype=float64", *extra))
    return cfg, build_objective(cfg, path)


def reference_grad(module, X, y, loss, x_flat):
    """The loss's gradient by plain autograd on a copy of the module with weights x_flat."""
    torch.nn.utils.vector_to_parameters(x_flat.clone(), module.parameters())
    module.zero_grad()
    out = module(X)
    value = torch.nn.functional.cross_entropy(out, y) if loss == "cross_entropy" else (
        torch.nn.functional.mse_loss(out, y))  # fmt: skip
    value.backward()
    return torch.cat([p.grad.reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_gradient_equals_autograd_on_the_module(loss, labelled, regression):
    path = labelled if loss == "cross_entropy" else regression
    _, obj = objective(path, f"objective.loss={loss}")
    data = np.load(path)
    X = torch.as_tensor(data["X"], dtype=torch.float64)
    y = torch.as_tensor(data["y"])
    y = y.long() if loss == "cross_entropy" else y.double()
    outputs = 3 if loss == "cross_entropy" else y.shape[1]
    module = TwoLayer(X.shape[1], outputs).double()
    assert obj.dim == sum(p.numel() for p in module.parameters())
    gen = torch.Generator().manual_seed(1)
    x = obj.initial_point() + 0.3 * torch.randn(obj.dim, generator=gen, dtype=torch.float64)
    rows = torch.arange(0, 40, 3)
    torch.testing.assert_close(obj.grad(x, None), reference_grad(module, X, y, loss, x))
    torch.testing.assert_close(obj.grad(x, rows), reference_grad(module, X[rows], y[rows], loss, x))
    metrics = obj.metrics(x)
    assert ("test_accuracy" in metrics) == (loss == "cross_entropy") and "test_loss" in metrics


def test_grad_batch_equals_per_point_gradients(labelled):
    _, obj = objective(labelled)
    gen = torch.Generator().manual_seed(2)
    points = obj.initial_point() + 0.2 * torch.randn(4, obj.dim, generator=gen,
                                                      dtype=torch.float64)  # fmt: skip
    samples = torch.stack([torch.randperm(48, generator=gen)[:8] for _ in range(4)])
    batched = obj.grad_batch(points, samples)
    for i in range(4):
        torch.testing.assert_close(batched[i], obj.grad(points[i], samples[i]))


def test_init_seed_gives_reproducible_weights(labelled):
    state = torch.random.get_rng_state()
    a = objective(labelled, "objective.init_seed=3")[1].initial_point()
    b = objective(labelled, "objective.init_seed=3")[1].initial_point()
    c = objective(labelled, "objective.init_seed=4")[1].initial_point()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator untouched


def test_a_run_through_the_command_line(labelled, tmp_path):
    out = run_cli(*args(labelled, "engine=sim", f"hydra.run.dir={tmp_path}"))
    assert out.returncode == 0, out.stderr[-2000:]
    header = (tmp_path / "history.csv").read_text().splitlines()[0]
    assert header.endswith("grad_norm_sq,test_loss,test_accuracy")


@pytest.mark.parametrize(
    "extra,message",
    [
        ("objective.module._target_=tests.models.user_pkg.Nope",
         "error: objective.module._target_=tests.models.user_pkg.Nope cannot be imported: "
         "ModuleNotFoundError: "),
        ("+objective.module.hidden=-2",
         "error: objective.module._target_=tests.models.user_pkg.TwoLayer could not be built: "
         "RuntimeError: "),
        ("objective.loss=hinge",
         "error: objective.loss must be one of cross_entropy, mse or a {_target_: pkg.fn} "
         "naming a callable loss(output, target), got 'hinge'"),
        ("objective.loss=mse",
         "(dataset.path): y holds integer class labels but objective=torch_module with "
         "objective.loss=mse needs real-valued targets"),
    ],
    ids=["bad target", "constructor error", "bad loss", "labels for mse"],
)  # fmt: skip
def test_bad_module_or_loss_is_one_line_exit_2(extra, message, labelled, tmp_path):
    out = run_cli(*args(labelled, extra, f"hydra.run.dir={tmp_path / 'run'}"))
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "run").exists()


def without_time(path) -> list[list[str]]:
    """A record file's rows as text, less its ``time`` column (wall seconds under engine=rpc,
    simulated ones under engine=sim)."""
    rows = [line.split(",") for line in path.read_text().splitlines()]
    i = rows[0].index("time")
    return [r[:i] + r[i + 1 :] for r in rows]


def test_ordered_real_run_equals_the_simulated_one(labelled, tmp_path):
    """engine=rpc engine.ordered=true with 2 workers on the user's module: the same events and
    history as engine=sim, every value written identically but the clock's (the workers build
    the module by its _target_)."""
    common = [*args(labelled, "topology=linear", "topology.noise=exponential",
                    "budget.gradients=40", "eval_every=5")]  # fmt: skip
    run_experiment(compose_cfg(*common, "engine=sim"), tmp_path / "sim")
    summary, _ = run_experiment(
        compose_cfg(*common, "engine=rpc", "engine.ordered=true", "engine.time_scale=0.002"),
        tmp_path / "rpc",
    )
    assert summary["status"] == "finished"
    for f in ("events.csv", "history.csv"):
        assert without_time(tmp_path / "rpc" / f) == without_time(tmp_path / "sim" / f), f


@pytest.mark.gpu
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_a_user_module_on_cuda_has_the_cpu_gradients(loss, labelled, regression):
    """objective.device=cuda: the wrapped module, its loss and its batched gradients on the
    GPU equal the CPU's up to float64 rounding."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    path = labelled if loss == "cross_entropy" else regression
    _, cpu = objective(path, f"objective.loss={loss}")
    _, gpu = objective(path, f"objective.loss={loss}", "objective.device=cuda")
    assert gpu.device.type == "cuda" and gpu.dim == cpu.dim
    gen = torch.Generator().manual_seed(5)
    points = cpu.initial_point() + 0.2 * torch.randn(3, cpu.dim, generator=gen,
                                                     dtype=torch.float64)  # fmt: skip
    samples = torch.stack([torch.randperm(40, generator=gen)[:8] for _ in range(3)])
    want = cpu.grad_batch(points, samples)
    got = gpu.grad_batch(points.cuda(), samples.cuda())
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gpu.loss(points[0].cuda()), cpu.loss(points[0]), rtol=1e-10,
                               atol=1e-12)  # fmt: skip
