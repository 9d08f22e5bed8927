"""``psmpi train``: one run, serial or under MPI; options mirror the config keys."""
from __future__ import annotations

import click

from .errors import EXIT_DIVERGED, fail, friendly

OPTIONS = [
    # (flag, type, help) -- every flag maps to the TrainConfig field of the same name
    ("--method", str, "gd, dcgd, ef14, ef21, ef21-plus, ef21-sgd, ef21-sgdm, ef21-sgd2m, ef21-sgd-ideal, "
                      "ef21-sgdm-ideal, lag, clag, marina, diana  [default: ef21]"),
    ("--compressor", str, "NAME[:PARAM]: identity, topk:K, topk:P%, randk:K, sign, natural, qsgd:S  "
                          "[default: topk:1; identity for gd/lag; randk:1 for marina/diana]"),
    ("--problem", click.Choice(["logreg", "softmax", "quadratic"]), "default: logreg for 2 classes, else softmax"),
    ("--dataset", str, "embedded name (breast-cancer, digits, iris, wine), FILE.h5, a LIBSVM file (.bz2/.gz ok), "
                       "a name such as a9a found in $PSMPI_DATA (see psmpi data fetch), "
                       "synthetic:rows=..,features=..,classes=..,density=..,hetero=.., or quad:beznosikov / "
                       "quad:identity,d=..,noise=..  [default: breast-cancer]"),
    ("--split", str, "contiguous (file order, remainder to the last worker), shuffle, label-sorted, "
                     "dirichlet:ALPHA (label skew; small ALPHA = more heterogeneous)  [default: contiguous]"),
    ("--lam", float, "weight of the nonconvex regulariser lam*sum x^2/(1+x^2)  [default: 0.1]"),
    ("--gamma", str, "step size, or 'theory' (the method's theoretical step)  [default: theory]"),
    ("--gamma-factor", float, "multiplier of the step size (1, 2, 4, ... as in the papers)  [default: 1]"),
    ("--eta", float, "momentum parameter of EF21-SGDM/SGD2M, in (0, 1]  [default: 0.1]"),
    ("--zeta", float, "trigger of LAG/CLAG  [default: 1]"),
    ("--p", float, "MARINA's full-synchronisation probability  [default: 1/(omega+1)]"),
    ("--shift-step", float, "DIANA's shift step alpha  [default: 1/(omega+1)]"),
    ("--batch-size", str, "per-worker minibatch size, or 'full'  [default: 1 for *-sgd* methods, else full]"),
    ("--init-batch-size", str, "batch B_init for the initial states  [default: the batch size]"),
    ("--iters", int, "number of rounds T  [default: 1000]"),
    ("--tol", float, "stop when ||grad f(x)||^2 <= tol at an evaluation  [default: 0]"),
    ("--x0", str, "zeros, ones, normal (seeded) or FILE.npy  [default: zeros]"),
    ("--seed", int, "seed; worker i's stream derives from (seed, i)  [default: 0]"),
    ("--eval-every", int, "rounds between exact evaluations of f and ||grad f||^2  [default: iters/200]"),
    ("--out", str, "output HDF5 file  [default: results/METHOD_DATASET_COMPRESSOR.h5]"),
    ("--backend", click.Choice(["auto", "serial", "mpi"]), "auto: mpi when launched with several ranks"),
    ("--workers", int, "number of simulated workers (serial backend)  [default: 20]"),
    ("--device", click.Choice(["cpu", "gpu"]), "where worker state, local gradients and compression live: cpu (numpy) or gpu "
                                                "(CuPy; needs psmpi[gpu] and a CUDA device)  [default: cpu]"),
    ("--value-dtype", click.Choice(["float32", "float64"]), "precision of values on the wire  [default: float32]"),
    ("--checkpoint-every", int, "write the whole state to OUT.ckpt every N rounds (atomically)"),
]


def _options(fn):
    for flag, typ, help_ in reversed(OPTIONS):
        fn = click.option(flag, type=typ, default=None, help=help_)(fn)
    return fn


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of options (the command line wins)")
@_options
@click.option("--resume", is_flag=False, flag_value="auto", default=None,
              help="continue from a checkpoint FILE (alone: OUT.ckpt); the result equals an uninterrupted run")
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
      psmpi train --config configs/ef21_vs_ef14.yaml --gamma-factor 4
    """
    from ..api import resolve_backend
    from ..config import check_writable, from_mapping, load_yaml, validate
    from ..results import write_result

    data = load_yaml(config_file) if config_file else {}
    source = config_file or "options"
    data.update({k: v for k, v in options.items() if v is not None})
    cfg = validate(from_mapping(data, source))
    check_writable(cfg.out)
    backend = resolve_backend(cfg)
    if backend == "mpi":
        from ..runtime.mpi import run_mpi

        res = run_mpi(cfg)
        if res is None:  # a worker rank
            return
    else:
        from ..runtime.serial import run_serial

        res = run_serial(cfg)
    write_result(cfg.out, res)
    m = res.metrics
    if not cfg.quiet and len(m["iteration"]):
        click.echo(f"{res.config['method']} with {res.config['compressor']} on {cfg.dataset}: "
                   f"{m['iteration'][-1]} rounds, ||grad f||^2 {m['grad_norm_sq'][0]:.3e} -> {m['grad_norm_sq'][-1]:.3e}, "
                   f"gamma {res.gamma:.4g}, {m['bits_up_per_worker'][-1] / 8e3:.1f} kB up per worker "
                   f"({backend}, {cfg.workers} workers)")
        click.echo(f"wrote {cfg.out}")
    if res.diverged:
        fail(f"{res.stop_reason}; metrics up to there are in {cfg.out}", EXIT_DIVERGED)
    if res.stop_reason.startswith("stopped by"):
        click.echo(f"psmpi: {res.stop_reason}", err=True)
