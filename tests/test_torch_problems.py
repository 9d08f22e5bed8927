"""Neural-network problems: flat parameter and gradient buffers, gradients, determinism, models."""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import psmpi_here
from psmpi.config import ConfigError
from psmpi.problems import NoSmoothnessConstant, TorchMissing, is_nn_problem

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def digits_shard(index=0, workers=4):
    from psmpi.data import load_shard
    from psmpi.data.images import open_images

    ds = open_images("digits")
    sh = load_shard(ds, workers, index, dense=True)
    return sh.A, np.searchsorted(ds.classes, sh.labels), ds.image_shape


def problem(model="mlp", seed=3, **kw):
    from psmpi.problems.nn import NNProblem

    X, y, shape = digits_shard()
    return NNProblem(X, y, shape, 10, model, seed, **kw)


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_without_torch_a_nn_problem_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    monkeypatch.delitem(sys.modules, "psmpi.problems.nn", raising=False)
    import psmpi.problems  # the package itself does not need torch

    assert is_nn_problem("mlp") and is_nn_problem("resnet18:width=8") and is_nn_problem("pkg.mod:build")
    assert not is_nn_problem("softmax")
    with pytest.raises(TorchMissing) as e:
        import psmpi.problems.nn  # noqa: F401
    assert "pip install 'psmpi[torch]'" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ImportError) and psmpi.problems is not None


def test_parameters_and_gradients_are_views_of_the_flat_buffers():
    torch = pytest.importorskip("torch")
    p = problem("cnn")
    fm = p.model
    assert fm.x.dtype == np.float32 and fm.x.shape == (p.dim,) and fm.x.base is not None
    params = list(fm.module.parameters())
    assert sum(q.numel() for q in params) == p.dim
    fm.x[:] = np.arange(p.dim, dtype=np.float32)  # writing the flat numpy vector moves the module's weights
    assert torch.equal(torch.cat([q.detach().reshape(-1) for q in params]), torch.arange(p.dim, dtype=torch.float32))
    flat_ptr, grad_ptr = fm.flat.data_ptr(), fm.flat_grad.data_ptr()
    p.value_and_grad(np.zeros(p.dim))
    off = 0
    for q in params:  # still views after loading x and a backward pass: same memory, consecutive offsets
        assert q.data_ptr() == flat_ptr + 4 * off and q.grad.data_ptr() == grad_ptr + 4 * off
        off += q.numel()
    assert fm.flat.data_ptr() == fm.x.ctypes.data and fm.flat_grad.data_ptr() == fm.g.ctypes.data


def plain_gradient(p, x, dtype):
    """Loss and gradient of an independent copy of p's module (no flat buffers) in ``dtype``."""
    import torch

    ref = copy.deepcopy(p.model.module).to(dtype)
    for q in ref.parameters():
        q.data, q.grad = q.data.clone(), None
    torch.nn.utils.vector_to_parameters(torch.from_numpy(x).to(dtype), ref.parameters())
    X = torch.from_numpy(p.X).to(dtype).view(-1, *p.input_shape)
    loss = torch.nn.functional.cross_entropy(ref(X), torch.from_numpy(p.y))
    loss.backward()
    return float(loss.detach()), torch.cat([q.grad.reshape(-1) for q in ref.parameters()]).double().numpy()


@pytest.mark.parametrize("model", ["mlp:32x16", "cnn", "resnet18:width=4"])
def test_gradient_equals_a_plain_torch_model_with_the_same_weights(model):
    torch = pytest.importorskip("torch")
    p = problem(model)
    x = p.initial_x() + 0.01 * np.random.default_rng(0).standard_normal(p.dim)
    v, g = p.value_and_grad(x)
    assert g.dtype == np.float64 and g.shape == (p.dim,)
    v32, g32 = plain_gradient(p, x.astype(np.float32).astype(np.float64), torch.float32)
    v64, g64 = plain_gradient(p, x.astype(np.float32).astype(np.float64), torch.float64)
    assert abs(v - v32) < 1e-5 and abs(v - v64) < 1e-5
    # as close to the float64 gradient as a plain float32 model is (float32 sums in another order)
    err, err32 = np.linalg.norm(g - g64), np.linalg.norm(g32 - g64)
    assert err <= 1.5 * err32 + 1e-7 * np.linalg.norm(g64) and err <= 1e-2 * np.linalg.norm(g64)


def test_gradient_matches_a_float64_finite_difference():
    torch = pytest.importorskip("torch")
    p = problem("mlp:16")
    rng = np.random.default_rng(1)
    x = p.initial_x() + 0.05 * rng.standard_normal(p.dim)
    g = p.value_and_grad(x)[1]
    ref = copy.deepcopy(p.model.module).double()
    X, y = torch.from_numpy(p.X).double(), torch.from_numpy(p.y)

    def f(z):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.from_numpy(z), ref.parameters())
            return float(torch.nn.functional.cross_entropy(ref(X), y))

    u = rng.standard_normal(p.dim)
    h = 1e-5
    fd = (f(x + h * u) - f(x - h * u)) / (2 * h)
    assert abs(fd - g @ u) < 1e-3 * max(1.0, abs(fd))


def test_weight_decay_adds_half_squared_norm_and_grad_dtype_option():
    pytest.importorskip("torch")
    x = problem().initial_x()
    v0, g0 = problem().value_and_grad(x)
    v1, g1 = problem(weight_decay=0.5, grad_dtype=np.float32).value_and_grad(x)
    assert g1.dtype == np.float32
    x32 = x.astype(np.float32).astype(np.float64)
    assert abs(v1 - v0 - 0.25 * x32 @ x32) < 1e-9
    np.testing.assert_allclose(g1, g0 + 0.5 * x32, rtol=1e-5, atol=1e-7)


def test_stoch_grad_is_the_gradient_on_exactly_the_sampled_rows():
    pytest.importorskip("torch")
    from psmpi.problems.nn import NNProblem

    p = problem("cnn")
    x = p.initial_x()
    rng = np.random.default_rng(7)
    sg = p.stoch_grad(x, rng, 12)
    idx = np.random.default_rng(7).integers(0, p.rows, 12)  # with replacement, as LogReg.stoch_grad draws
    on_rows = NNProblem(p.X[idx], p.y[idx], p.input_shape, 10, p.model).value_and_grad(x)[1]
    assert np.array_equal(sg, on_rows)
    check = np.random.default_rng(7)
    check.integers(0, p.rows, 12)
    assert rng.bit_generator.state == check.bit_generator.state  # drew exactly the batch, nothing more


DETERMINISM = """
import json, sys
sys.path[:0] = [{root!r}, {root!r} + "/tests"]
from test_torch_problems import results
print(json.dumps({{m: results(m) for m in ("mlp", "cnn")}}))
"""


def results(model):
    p = problem(model)
    x = p.initial_x()
    v, g = p.value_and_grad(x + 0.01)
    sg = p.stoch_grad(x, np.random.default_rng(11), 16)
    return [digest(x), repr(v), digest(g), digest(sg)]


def test_same_seed_gives_bit_identical_x0_values_and_gradients_in_this_and_a_fresh_process():
    pytest.importorskip("torch")
    here = {m: results(m) for m in ("mlp", "cnn")}
    assert here == {m: results(m) for m in ("mlp", "cnn")}  # two more independent problem objects
    out = subprocess.run([sys.executable, "-c", DETERMINISM.format(root=str(ROOT))], capture_output=True,
                         text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here
    assert digest(problem(seed=4).initial_x()) != here["mlp"][0]  # x0 comes from the seed


def test_results_do_not_depend_on_earlier_calls_or_a_shared_model():
    pytest.importorskip("torch")
    from psmpi.problems.nn import NNProblem

    a = problem("cnn")
    x = a.initial_x()
    fresh = a.value_and_grad(x)
    a.stoch_grad(x + 1.0, np.random.default_rng(0), 5)
    X, y, shape = digits_shard(index=1)
    other = NNProblem(X, y, shape, 10, a.model)  # a second worker sharing the model (serial runtime)
    other.value_and_grad(x - 1.0)
    again = a.value_and_grad(x)
    assert fresh[0] == again[0] and np.array_equal(fresh[1], again[1])


def test_accuracy_and_loss_helpers_match_a_direct_evaluation():
    torch = pytest.importorskip("torch")
    p = problem("mlp")
    X, y, _ = digits_shard(index=2)
    x = p.initial_x()
    acc, loss = p.accuracy(x, X, y), p.loss(x, X, y)
    with torch.no_grad():
        out = p.model.module(torch.from_numpy(X).view(-1, 1, 8, 8))
    assert acc == float((out.argmax(1).numpy() == y).mean())
    assert abs(loss - float(torch.nn.functional.cross_entropy(out, torch.from_numpy(y)))) < 1e-5
    assert p.model.evaluate(x, X, y, chunk=7) == pytest.approx((loss, acc), rel=1e-6)


def test_no_smoothness_constant_says_to_pass_gamma():
    pytest.importorskip("torch")
    p = problem()
    for call in (p.local_smoothness, p.hbound_dim):
        with pytest.raises(NoSmoothnessConstant, match="--gamma"):
            call()
    assert issubclass(NoSmoothnessConstant, ValueError)


def test_resnet18_has_about_11m_parameters_and_runs_on_cifar_shaped_images():
    torch = pytest.importorskip("torch")
    from psmpi.problems.nn import FlatModel

    fm = FlatModel("resnet18", (3, 32, 32), 10)
    assert fm.dim == 11_173_962
    X = np.random.default_rng(0).random((2, 3 * 32 * 32), dtype=np.float32)
    loss, _ = fm.loss_grad(X, np.array([1, 7]))
    assert np.isfinite(loss) and np.count_nonzero(fm.g) > 0.9 * fm.dim
    assert not any(True for _ in fm.module.buffers())  # GroupNorm: no state outside x
    assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()


def test_mlp_size_option_reaches_a_million_parameters():
    pytest.importorskip("torch")
    from psmpi.problems.nn import FlatModel

    assert FlatModel("mlp:1024x1024", (1, 28, 28), 10).dim == 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10


def test_user_module_factory_path_callable_and_module(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        import torch
        seen = []
        def build(input_shape, n_classes):
            seen.append((input_shape, n_classes))
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[-1] ** 2, n_classes))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    p = problem("my_models:build")
    import my_models

    assert my_models.seen == [((1, 8, 8), 10)] and p.dim == 64 * 10 + 10
    v, g = p.value_and_grad(p.initial_x())
    assert np.isfinite(v) and g.shape == (650,)
    assert problem(my_models.build).dim == 650
    mod = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    q = problem(mod)
    assert np.array_equal(q.initial_x(), torch.cat([w.detach().reshape(-1) for w in mod.parameters()]).numpy())
    q.model.x[:] = 0  # the given module was copied, not taken over
    assert mod[1].weight.abs().sum() > 0


@pytest.mark.parametrize("spec, message", [
    ("vgg", "unknown model"), ("mlp:12xa", "bad mlp sizes"), ("resnet18:depth=3", "bad option"),
    ("resnet18:norm=layer", "unknown norm"), ("no_such_module_xyz:f", "cannot import"),
    ("json:no_such_thing", "has no"), ("json:__doc__", "not callable"), ("operator:is_", "not a torch.nn.Module"),
])
def test_bad_model_specs_are_config_errors(spec, message):
    pytest.importorskip("torch")
    with pytest.raises(ConfigError, match=message):
        problem(spec)


def test_cnn_and_resnet_need_images():
    pytest.importorskip("torch")
    from psmpi.problems.nn import NNProblem

    X = np.zeros((3, 5), np.float32)
    with pytest.raises(ConfigError, match="needs images"):
        NNProblem(X, np.zeros(3, int), (5,), 2, "cnn")
    assert NNProblem(X, np.zeros(3, int), (5,), 2, "mlp").dim == 5 * 128 + 128 + 128 * 2 + 2


def test_a_model_with_buffers_is_refused_in_one_line():
    """BatchNorm's running statistics would be state outside x, updated by whichever
    process computes a gradient: the serial and MPI runs would differ."""
    torch = pytest.importorskip("torch")
    from psmpi.errors import ConfigError
    from psmpi.problems.nn import FlatModel

    def with_running_stats(input_shape, n_classes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8),
                                   torch.nn.Linear(8, n_classes))

    with pytest.raises(ConfigError, match="buffers .*running_mean.* are state outside the parameter vector"):
        FlatModel(with_running_stats, (1, 8, 8), 10)
    FlatModel("resnet18:width=4,norm=batch", (3, 32, 32), 10)  # batch statistics only: no buffers


# ----------------------------------------------------------------- PowerSGD ---
PSMPI_TRAIN = [sys.executable, "-m", "psmpi", "train"]


def _cli(args):
    """``psmpi train ARGS`` in this process."""
    return psmpi_here(["train", *args])
MLP_POWERSGD = ["--problem", "mlp", "--dataset", "digits", "--method", "ef14", "--compressor", "powersgd:2",
                "--gamma", "0.5", "--batch-size", "16", "--eval-every", "5", "--quiet", "--workers", "3", "--seed", "2"]


def test_parameter_blocks_are_each_parameters_offset_and_shape_in_x():
    pytest.importorskip("torch")
    p = problem("cnn")
    params = list(p.model.module.parameters())
    assert [shape for _, shape in p.param_blocks] == [tuple(q.shape) for q in params]
    for (off, shape), q in zip(p.param_blocks, params):
        np.testing.assert_array_equal(p.model.x[off:off + q.numel()], q.detach().numpy().ravel())
    assert p.param_blocks[-1][0] + int(np.prod(p.param_blocks[-1][1])) == p.dim


def test_powersgd_checkpoint_holds_each_workers_q_and_resume_is_exact(tmp_path):
    """Checkpoint at round 20, resume to 30: equal to the uninterrupted run bit for bit,
    which needs every worker's warm-started Q back (a fresh Q_0 gives another run)."""
    pytest.importorskip("torch")
    from psmpi.results import read_result

    full, part = tmp_path / "full.h5", tmp_path / "part.h5"
    # the two first runs in this process (torch is imported already); the resume in a fresh
    # process, so every Q it uses can only come from the checkpoint
    for args in (["--iters", "30", "--out", str(full)], ["--iters", "25", "--checkpoint-every", "20", "--out", str(part)]):
        r = _cli(MLP_POWERSGD + args)
        assert r.exit_code == 0, (r.output, r.stderr)
    subprocess.run(PSMPI_TRAIN + MLP_POWERSGD + ["--iters", "30", "--out", str(part), "--resume"], check=True, cwd=ROOT)
    a, b = read_result(str(full)), read_result(str(part))
    assert np.array_equal(a.x, b.x)
    for k in ("loss", "grad_norm_sq", "bytes_up"):
        assert np.array_equal(a.metrics[k], b.metrics[k]), k


def test_powersgd_workers_each_have_their_own_copy_in_the_serial_runtime():
    """The serial runtime builds every worker's context from one plan: a stateful
    compressor must not be shared (one Q per worker), a stateless one may be."""
    pytest.importorskip("torch")
    from psmpi.api import make_config
    from psmpi.runtime.common import UNKNOWN, describe_data, local_problem, make_workers, plan_run

    for spec, shared in (("powersgd:1", False), ("topk:5", True)):
        cfg = make_config({"problem": "mlp", "dataset": "digits", "method": "ef14", "compressor": spec,
                           "gamma": 0.1, "workers": 3})
        info = describe_data(cfg)
        plan = plan_run(cfg, info.dim, UNKNOWN, info.model.blocks)
        workers = make_workers(cfg, plan, {i: local_problem(cfg, info, i) for i in range(3)})
        comps = [w.ctx.compressor for w in workers]
        assert (len({id(c) for c in comps}) == 1) == shared, spec


@pytest.mark.parametrize("args,message", [
    (["--dataset", "breast-cancer", "--compressor", "powersgd:2"],
     "powersgd needs a neural-network problem (--problem mlp|cnn|resnet18|module:factory)"),
    (["--problem", "mlp", "--dataset", "digits", "--compressor", "powersgd:2"],
     "--problem mlp has no smoothness constant, so theory gives no step: pass --gamma STEP"),
    (["--problem", "mlp", "--dataset", "digits", "--compressor", "powersgd:2", "--method", "3pcv5", "--gamma", "0.1"],
     "--p defaults to a constant of the compressor, but powersgd:2 has no known contraction parameter alpha"),
    (["--problem", "mlp", "--dataset", "digits", "--compressor", "powersgd:0", "--gamma", "0.1"],
     "powersgd needs a rank R >= 1"),
    (["--problem", "mlp", "--dataset", "digits", "--method", "3pcv4", "--compressor2", "powersgd:2", "--gamma", "0.1"],
     "--compressor2: powersgd can only be the main --compressor"),
    (["--problem", "mlp", "--dataset", "digits", "--method", "dcgd", "--compressor", "powersgd:2", "--gamma", "0.1"],
     None),
])
def test_powersgd_where_it_cannot_run_is_one_line_with_exit_2(tmp_path, args, message):
    """PowerSGD needs parameter shapes; it has no alpha (a default or a theory step that
    needs one is refused); it is the main compressor only.  DCGD runs it (any C).  (The
    command line in this process, as tests/test_cli_train.py's table of bad input: a
    process per case would import torch six times; that a real process prints the same
    one line is tests/test_cli_train.py's and tests/test_reliability.py's business.)"""
    pytest.importorskip("torch")
    r = _cli(args + ["--iters", "2", "--quiet", "--workers", "2", "--out", str(tmp_path / "o.h5")])
    if message is None:
        assert r.exit_code == 0, (r.output, r.stderr, r.exception)
        return
    assert r.exit_code == 2 and "Traceback" not in r.stderr and "Traceback" not in r.output, (r.output, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
def test_a_batch_the_model_refuses_is_one_line():
    """BatchNorm on one value per channel: a ResNet-18 on 8x8 images has 1x1 maps in its last
    stage, so a minibatch of one row cannot be normalised (a batch of two can)."""
    pytest.importorskip("torch")
    p = problem("resnet18:width=2,norm=batch")
    x = p.initial_x()
    assert np.all(np.isfinite(p.stoch_grad(x, np.random.default_rng(0), 2)))
    with pytest.raises(ConfigError, match=r"cannot run on a batch of shape \(1, 1, 8, 8\): Expected more than 1 value"):
        p.stoch_grad(x, np.random.default_rng(0), 1)
