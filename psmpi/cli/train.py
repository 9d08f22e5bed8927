"""``psmpi train``: one run, serial or under MPI.

The options are the run's fields (below) plus one option per hyper-parameter
that some method declares (``psmpi.methods``: its name, help, range, and the
methods that use it), so ``--help`` and the YAML keys follow the declarations.
"""
from __future__ import annotations

import json

import click

from ..config import EVALS, NN_EVAL_ROWS, NN_EVALS
from .errors import EXIT_DIVERGED, EXIT_NO_WORKERS, fail, friendly

FIELD_OPTIONS = [
    # (flag, type, help) -- every flag maps to the TrainConfig field of the same name
    ("--method", str, None),  # help made from the registry
    ("--compressor", str, None),
    ("--problem", str, "logreg, softmax, quadratic, or a neural network (psmpi[torch]) on an image dataset: mlp, "
                       "mlp:H1xH2, cnn, resnet18, or module:factory for your own torch.nn.Module "
                       "(factory(input_shape, n_classes))  [default: logreg for 2 classes, else softmax]"),
    ("--dataset", str, "embedded name (breast-cancer, digits, iris, wine), FILE.h5, a LIBSVM file (.bz2/.gz ok), "
                       "a name such as a9a found in $PSMPI_DATA (see psmpi data fetch), "
                       "synthetic:rows=..,features=..,classes=..,density=..,hetero=.., or quad:beznosikov / "
                       "quad:identity,d=..,noise=.. / quad:skewed,..  [default: breast-cancer]"),
    ("--test-dataset", str, "a held-out test set (a name or file like --dataset, e.g. a9a.t): adds /metrics/test_loss "
                            "and test_accuracy, evaluated on the master"),
    ("--test-fraction", float, "hold out this seeded fraction of --dataset's rows as the test set instead"),
    ("--split", str, "contiguous (file order, remainder to the last worker), shuffle, label-sorted, "
                     "dirichlet:ALPHA (label skew; small ALPHA = more heterogeneous)  [default: contiguous]"),
    ("--lam", float, "weight of the nonconvex regulariser lam*sum x^2/(1+x^2)  [default: 0.1]"),
    ("--gamma", str, "step size, or 'theory' (the method's theoretical step; see --method)  [default: theory]"),
    ("--gamma-factor", float, "multiplier of the step size (1, 2, 4, ... as in the papers)  [default: 1]"),
    ("--iters", int, "number of rounds T (positive)  [default: 1000]"),
    ("--tol", float, "stop when ||grad f(x)||^2 <= tol at an evaluation  [default: 0]"),
    ("--x0", str, "zeros, ones, normal (seeded), init (a neural network's seeded initialisation) or FILE.npy  "
                  "[default: zeros; init for neural networks]"),
    ("--seed", int, "seed; worker i's stream derives from (seed, i)  [default: 0]"),
    ("--eval-every", int, f"rounds between exact evaluations of f and ||grad f||^2  [default: iters/{EVALS}; "
                          f"iters/{NN_EVALS} for neural networks]"),
    ("--eval-rows", str, "evaluate f, ||grad f||^2 and the accuracies on a fixed seeded subset of this many rows "
                         "(split evenly over the workers, each drawing from its own rows; and at most this many "
                         f"test rows), or full  [default: {NN_EVAL_ROWS} for neural networks, full otherwise]"),
    ("--out", str, "output HDF5 file  [default: results/METHOD_DATASET_COMPRESSOR.h5, numbered _2, _3, ... "
                   "when taken]"),
    ("--backend", click.Choice(["auto", "serial", "mpi"]), "auto: mpi when launched with several ranks"),
    ("--workers", int, "number of workers: simulated ones in the serial runtime [default: 20]; under MPI, "
                       "N workers hosted by the world size minus one ranks in contiguous blocks "
                       "[default: one per worker rank]"),
    ("--device", click.Choice(["cpu", "gpu"]), "where worker state, local gradients and compression live: cpu "
                                                "(numpy) or gpu (CuPy; needs psmpi[gpu] and a CUDA device)  "
                                                "[default: cpu]"),
    ("--value-dtype", click.Choice(["float32", "float64"]), "precision of values on the wire  [default: float32]"),
    ("--checkpoint-every", int, "write the whole state to OUT.ckpt every N rounds (atomically)"),
    ("--on-worker-failure", click.Choice(["abort", "continue"]),
     "abort: a dead rank ends the job (plain MPI); continue: the master goes on with the surviving workers "
     "(needs `mpirun --with-ft ulfm`; see README, Reliability)  [default: abort]"),
    ("--label", str, "legend label of this run in psmpi plot  [default: made from the config]"),
]


def _method_help() -> str:
    from ..methods import REGISTRY

    lines = [f"{name} (step 'theory': {cls.theory or 'see its docstring'})" for name, cls in REGISTRY.items()]
    return "; ".join(lines) + "  [default: ef21]"


def _compressor_help() -> str:
    from ..compressors import REGISTRY

    names = ", ".join(f"{name} ({cls.constant})" if cls.constant else name for name, cls in REGISTRY.items())
    return (f"NAME[:PARAM], NAME one of {names} (e.g. topk:1, topk:1%, randk:5, qsgd:4, powersgd:2), or A+B: "
            "a sparsifier, then an unbiased compressor on the kept values (e.g. topk:1%+natural)  "
            "[default: topk:1; identity for uncompressed methods; randk:1 for methods that need an unbiased C]")


def _param_help(p) -> str:
    from ..methods import REGISTRY, users_of

    users = users_of(p.name)
    by_default = {}  # methods may declare different defaults (the batch size: 1 or full)
    for m in users:
        d = REGISTRY[m].param(p.name).default
        if d is not None:
            by_default.setdefault(d, []).append(m)
    if len(by_default) > 1:
        default = "  [default: " + "; ".join(f"{d} for {', '.join(ms)}" for d, ms in by_default.items()) + "]"
    else:
        default = "".join(f"  [default: {d}]" for d in by_default)
    rng = p.range_text()
    rng = f"in {rng}" if rng.startswith(("(", "[")) else rng
    return f"{p.help}; {rng}; used by {', '.join(users)}{default}"


def _options(fn):
    from ..methods import all_params

    params = [(p.flag, str, _param_help(p)) for p in all_params().values()]
    helps = {"--method": _method_help(), "--compressor": _compressor_help()}
    for flag, typ, help_ in reversed(FIELD_OPTIONS + params):
        fn = click.option(flag, type=typ, default=None, help=helps.get(flag, help_))(fn)
    return fn


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of options (the command line wins)")
@_options
@click.option("--resume", is_flag=False, flag_value="auto", default=None,
              help="continue from a checkpoint FILE (alone: OUT.ckpt); the result equals an uninterrupted run")
@click.option("--overwrite", is_flag=True, default=None, help="replace an existing --out file")
@click.option("--cuda-aware", is_flag=True, default=None,
              help="with --device gpu under MPI: broadcast x straight into device memory (needs a CUDA-aware MPI)")
@click.option("--quiet", "-q", is_flag=True, default=None, help="no progress bar or summary; errors still go to stderr")
@friendly
def train(config_file, **options):
    """Run one training run and write its HDF5 output.

    \b
    Examples:
      psmpi train --workers 20 --method ef21 --compressor topk:1 --dataset a9a.h5
      mpirun -n 21 psmpi train --method ef21-sgdm --iters 2000
      mpirun -n 3 psmpi train --workers 20 --method ef21     # 10 workers on each worker rank
      psmpi train --config configs/ef21_vs_ef14.yaml --gamma-factor 4
    """
    from ..api import make_config, resolve_backend, run
    from ..config import load_yaml

    data, lines = load_yaml(config_file, with_lines=True) if config_file else ({}, None)
    source = config_file or "options"
    options = {k: v for k, v in options.items() if v is not None}
    data.update(options)
    cfg = make_config(data, source, {k: v for k, v in (lines or {}).items() if k not in options})
    backend = resolve_backend(cfg)
    try:
        _finish(cfg, run(cfg), backend)
    finally:
        if backend == "mpi":
            _end_without_finalize_after_a_failure()


def _end_without_finalize_after_a_failure():
    """After a worker's failure MPI_Finalize can wait forever on the dead process
    (``runtime.mpi.finalize_would_hang``): a rank that survived one ends here, its
    output flushed, with the exit code it was about to return."""
    import os
    import sys

    from ..runtime.mpi import finalize_would_hang

    e = sys.exc_info()[1]
    if finalize_would_hang() and (e is None or isinstance(e, SystemExit)):  # (an error is reported first)
        code = 0 if e is None else (e.code if isinstance(e.code, int) else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _finish(cfg, res, backend):
    """The run summary and the exit status (rank 0; nothing on a worker rank)."""
    if res is None:  # an MPI worker rank
        return
    m = res.metrics
    if not cfg.quiet and len(m["iteration"]):
        click.echo(f"{res.config['method']} with {res.config['compressor']} on {cfg.dataset}: "
                   f"{m['iteration'][-1]} rounds, ||grad f||^2 {m['grad_norm_sq'][0]:.3e} -> {m['grad_norm_sq'][-1]:.3e}, "
                   f"gamma {res.gamma:.4g}, {m['bits_up_per_worker'][-1] / 8e3:.1f} kB up per worker "
                   f"({backend}, {cfg.workers} workers)")
        for e in json.loads(res.attrs.get("events", "[]")):
            click.echo(f"worker {e['worker']} {e['event']} in round {e['round']}")
        if res.stop_reason != "no_workers" and len(m["n_workers"]) and m["n_workers"][-1] < cfg.workers:
            click.echo(f"{m['n_workers'][-1]} of {cfg.workers} workers took part at the end; f and ||grad f||^2 "
                       f"are on the full data throughout")
        click.echo(f"wrote {cfg.out}")
    if res.stop_reason == "no_workers":
        fail(f"{res.attrs['stop_message']}; metrics up to there are in {cfg.out}", EXIT_NO_WORKERS)
    if res.diverged:
        fail(f"{res.attrs['stop_message']}; metrics up to there are in {cfg.out}", EXIT_DIVERGED)
    if res.stop_reason == "signal":
        _tell_after_signal(f"psmpi: {res.attrs['stop_message']}; the metrics so far are in {cfg.out}", backend)


def _tell_after_signal(line: str, backend: str) -> None:
    """The stop message, where the user sees it: under a local mpirun that was
    interrupted (Ctrl-C), the launcher no longer forwards our output, so the line
    goes to its standard error directly."""
    from ..launch import launcher_stderr_path

    path = launcher_stderr_path() if backend == "mpi" else None
    if path is not None:
        try:
            with open(path, "w") as f:
                f.write(line + "\n")
            return
        except OSError:
            pass
    click.echo(line, err=True)
