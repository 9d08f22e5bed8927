"""``psmpi bench``: throughput and bandwidth benchmarks.

Each subcommand calls one library function of :mod:`psmpi.bench` (``run_*``),
prints its fixed-width table and, with ``--json FILE``, writes the full result.
Options every benchmark takes live in :func:`common_options`; adding a
benchmark is one module in ``psmpi/bench/`` plus one short command here.
"""
from __future__ import annotations

import functools

import click

from .errors import fail


def common_options(fn):
    """--repeat, --warmup, --budget, --seed and --json, shared by every benchmark."""
    fn = click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
                      help="also write the full result (rows, parameters, machine) as JSON")(fn)
    fn = click.option("--seed", type=int, default=0, show_default=True, help="seed of the benchmark vectors")(fn)
    fn = click.option("--budget", type=float, default=20.0, show_default=True,
                      help="seconds per measurement after which repetitions stop (at least two run)")(fn)
    fn = click.option("--warmup", type=click.IntRange(0), default=1, show_default=True, help="untimed runs first")(fn)
    fn = click.option("--repeat", type=click.IntRange(1), default=5, show_default=True,
                      help="timed repetitions (the best is reported)")(fn)
    return fn


def size_options(default_sizes: str, default_fractions: str = "0.1%,1%,10%"):
    def deco(fn):
        fn = click.option("--fractions", default=default_fractions, show_default=True,
                          help="K/d values, comma separated (percent or fraction)")(fn)
        fn = click.option("--sizes", default=default_sizes, show_default=True,
                          help="dimensions d, comma separated (100000, 1e5 or 10^5)")(fn)
        return fn
    return deco


def report(result: dict, format_table, json_path):
    from ..bench.common import write_json

    click.echo(format_table(result))
    if json_path:
        write_json(result, json_path)
        click.echo(f"wrote {json_path}")


def bench_errors(fn):
    """Bad option values and missing devices: one line on stderr, exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, RuntimeError, OSError) as e:
            fail(str(e))
    return wrapper


@click.group()
def bench():
    """Throughput and bandwidth benchmarks (tables on stdout, JSON with --json)."""


@bench.command()
@size_options("1e5,1e6,1e7,1e8")
@click.option("--compressors", default=None,
              help="comma-separated names or NAME:PARAM (default: all; topk/randk run at every K/d)")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="auto: numpy, and CuPy too when a device is present")
@click.option("--dist", type=click.Choice(["normal", "laplace", "cauchy"]), default="normal", show_default=True,
              help="distribution of the vector's entries")
@common_options
@bench_errors
def compress(sizes, fractions, compressors, device, dist, repeat, warmup, budget, seed, json_path):
    """Every compressor at each d and K/d: time, GB/s, numpy.copy and argpartition side by side; for TopK
    also the EF21 step c = TopK(x - g), g += c, with x - g written and fused (from d = 2^15).

    \b
    Example (CI size):
      psmpi bench compress --sizes 1e4 --repeat 2 --warmup 0 --json c.json
    """
    from ..bench.common import parse_fractions, parse_sizes
    from ..bench.compress import format_table, run_compress_bench

    specs = [s.strip() for s in compressors.split(",") if s.strip()] if compressors else None
    res = run_compress_bench(parse_sizes(sizes), parse_fractions(fractions), specs, repeat, warmup, budget,
                             device, dist, seed)
    report(res, format_table, json_path)


@bench.command()
@size_options("1e5,1e6,1e7")
@click.option("--encodings", default=None, help="comma-separated support encodings (default: all of the codec)")
@click.option("--compressors", default="topk", show_default=True,
              help="comma-separated: topk (each support encoding at each K/d) and any other NAME[:PARAM] "
                   "(one message per d against its information content), e.g. topk,natural,qsgd:4")
@common_options
@bench_errors
def wire(sizes, fractions, encodings, compressors, repeat, warmup, budget, seed, json_path):
    """TopK message bytes per support encoding against the information bound; other compressors' messages
    against their information content; encode/decode throughput.

    \b
    Example (CI size):
      psmpi bench wire --sizes 1e4 --repeat 2 --warmup 0 --json w.json
      psmpi bench wire --sizes 1e6,1e7 --compressors natural,qsgd:4
    """
    from ..bench.common import parse_fractions, parse_sizes
    from ..bench.wire import format_table, run_wire_bench

    encs = [e.strip() for e in encodings.split(",") if e.strip()] if encodings else None
    specs = [c.strip() for c in compressors.split(",") if c.strip()]
    if not specs:
        raise click.BadParameter("no compressor given", param_hint="--compressors")
    res = run_wire_bench(parse_sizes(sizes), parse_fractions(fractions), encs, repeat, warmup, budget, seed,
                         specs)
    report(res, format_table, json_path)


@bench.command("round")
@click.option("--dataset", default=None,
              help="any --dataset of psmpi train  [default: a9a (looked up in $PSMPI_DATA); digits with --problem]")
@click.option("--problem", default=None,
              help="a neural network instead of the dataset's convex problem: mlp, mlp:1024x1024, cnn, resnet18, ... "
                   "(psmpi[torch]; each worker evaluates one row at the first and last round)")
@click.option("--gamma", type=float, default=None, help="the step with --problem  [default: 0.01]")
@click.option("--batch-size", default=None, help="the minibatch with --problem (a method that takes one)  "
              "[default: the method's]")
@click.option("--method", default="ef21", show_default=True)
@click.option("--compressor", default="topk:1", show_default=True)
@click.option("--workers", type=click.IntRange(1), default=20, show_default=True)
@click.option("--rounds", type=click.IntRange(2), default=200, show_default=True)
@click.option("--mpi/--no-mpi", default=True, show_default=True, help="also run under mpirun (see --ranks)")
@click.option("--ranks", default="", help="MPI world sizes to run, comma separated, the workers spread over ranks "
              "1.. [default: workers+1 and 3]")
@click.option("--sizes", default="", help="dimensions d for the sparse-vs-dense table on synthetic data, e.g. 1e3,1e5")
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="where the runtimes keep worker state and compute (the plain numpy loop stays on the CPU)")
@click.option("--repeat", type=click.IntRange(1), default=1, show_default=True,
              help="runs of each runtime row; the fastest is kept.  Under MPI each run of the compressed row "
                   "follows a floor job of its own (the floor: the lowest job, each the best of three repetitions), "
                   "and each pair's ratio is printed too, so that the machine's drift hits both alike")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@bench_errors
def round_(dataset, problem, gamma, batch_size, method, compressor, workers, rounds, mpi, ranks, sizes, device,
           repeat, json_path):
    """Time per round of the serial and MPI runtimes, split into phases, next to
    the dense baseline (the same --method with the identity compressor, so EF21 +
    identity by default: an uncompressed Gather of d floats) and a plain numpy
    loop over the workers' dense local gradients.
    With --mpi (on the CPU) also the MPI floor of each world size: the same
    mpirun and collectives with no work, then with the local gradients only
    (computed as the runtime does: one stacked product for the workers a rank
    hosts), and the round's ratio to it.  With --problem (a neural network) the phases
    split the gradient into the model's forward/backward passes and the rest, and
    the table gives the round's share outside forward/backward and peak memory.

    \b
    Example (the MLP target of BENCHMARKS.md):
      psmpi bench round --problem mlp:1024x1024 --compressor topk:1% --workers 4 --rounds 30 --ranks 5
    """
    from ..bench.common import parse_sizes
    from ..bench.round import Model, format_table, run_round_bench

    dims = parse_sizes(sizes) if sizes else ()
    try:
        sizes_r = tuple(int(r) for r in ranks.split(",") if r.strip()) or None
    except ValueError:
        raise ValueError(f"--ranks expects integers like 21,3 (got {ranks!r})") from None
    model = None
    if problem is not None:
        from ..problems import is_nn_problem

        if not is_nn_problem(problem):
            raise ValueError(f"--problem takes a neural network (mlp, cnn, resnet18, ...), not {problem!r}: "
                             f"the convex problem follows from --dataset")
        model = Model(problem, 0.01 if gamma is None else gamma, batch_size)
    elif batch_size is not None or gamma is not None:
        raise ValueError(f"{'--batch-size' if batch_size is not None else '--gamma'} goes with --problem")
    report(run_round_bench(dataset or ("digits" if model else "a9a"), method, compressor, workers, rounds, mpi=mpi,
                           sizes=dims, device=device, ranks=sizes_r, model=model, repeat=repeat),
           format_table, json_path)


@bench.command()
@click.option("-n", "--ranks", type=click.IntRange(2), default=21, show_default=True,
              help="mpirun -n: the master and ranks - 1 workers")
@click.option("--repeat", type=click.IntRange(1), default=3, show_default=True,
              help="timed repetitions of each job (best and median reported)")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True, help="untimed runs of each job first")
@click.option("--dataset", default=None, help="--dataset of the train job (default: train's, the embedded data)")
@click.option("--method", default=None, help="--method of the train job (default: train's)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="also write the full result (rows, parameters, machine) as JSON")
@bench_errors
def startup(ranks, repeat, warmup, dataset, method, json_path):
    """Wall time of mpirun -n RANKS psmpi train --iters 1 next to the import floor.

    Side by side in one run: a bare mpi4py barrier, the same after importing
    numpy, scipy.sparse and h5py (the floor), and one training round; prints
    train / floor.

    \b
    Example (CI size):
      psmpi bench startup -n 3 --repeat 1 --warmup 0 --json s.json
    """
    from ..bench.startup import format_table, run_startup_bench

    report(run_startup_bench(ranks, repeat, warmup, dataset, method), format_table, json_path)


@bench.command()
@click.option("--rate", "rates", default="1gbit", show_default=True,
              help="link rates in tc units, comma separated (e.g. 100mbit,1gbit,10gbit)")
@size_options("1e4,1e5,1e6")
@click.option("--methods", default="gd,ef21,ef21-sgdm", show_default=True,
              help="gd (dense) and compressed methods run with Top-K at each K/d; missing ones are skipped")
@click.option("--problem", type=click.Choice(["synthetic", "mlp"]), default="synthetic", show_default=True,
              help="synthetic logistic regression with d features, or mlp:H on digits with about d weights (torch; no theoretical step: the --gamma-factors multiply 0.01)")
@click.option("--workers", type=click.IntRange(1), default=8, show_default=True, help="mpirun -n workers+1")
@click.option("--iters", type=click.IntRange(2), default=30, show_default=True,
              help="rounds of every serial run (at each step factor, evaluated every round: rounds to the target) "
                   "and of the per-round run over the link")
@click.option("--target", type=float, default=0.1, show_default=True,
              help="target ||grad f||^2 as a fraction of its value at x0")
@click.option("--eval-every", type=click.IntRange(1), default=None,
              help="rounds between evaluations of the per-round run over the link (their time is left out; "
                   "an evaluation also holds part of its round's downlink, so keep them rare) [iters/10]")
@click.option("--gamma-factors", default="1", show_default=True,
              help="multiples of each method's theoretical step, comma separated (e.g. 1,4,16,64; EF21-BC: of "
                   "EF21's step): every method and K runs at each; the factor reaching the target in the fewest "
                   "rounds (and staying there) is timed over the link; runs that diverge, grow, leave the target "
                   "or raise f are listed as such")
@click.option("--lam", type=float, default=None,
              help="regulariser weight of the synthetic problem [train's default, 0.1]; smaller is harder for GD")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="also write the full result (rows, parameters, machine) as JSON")
@bench_errors
def network(rates, sizes, fractions, methods, problem, workers, iters, target, eval_every, gamma_factors, lam,
            json_path):
    """GD against compressed methods over a rate-limited TCP link: ms per round split
    into the downlink (Bcast of x) and the uplink side, bytes per round, time to a
    target ||grad f||^2 (the best over --gamma-factors), and the link's measured
    throughput.

    Each mpirun runs in a private network namespace (unshare -n: root or user
    namespaces) whose loopback is shaped with tc tbf, over TCP only.

    \b
    Examples:
      psmpi bench network --rate 1gbit --sizes 1e3 --fractions 10% --workers 2 --iters 3   # CI size
      psmpi bench network --rate 100mbit --sizes 1e4 --fractions 10%,1% --methods gd,ef21,ef21-bc \\
          --lam 1e-4 --target 1e-3 --iters 200 --eval-every 50 --gamma-factors 1,4,16,64,256
    """
    from ..bench.common import parse_fractions, parse_sizes
    from ..bench.network import format_table, parse_factors, parse_rates, run_network_bench

    meths = [m.strip() for m in methods.split(",") if m.strip()]
    report(run_network_bench(parse_rates(rates), parse_sizes(sizes), parse_fractions(fractions), workers, iters,
                             target, eval_every, meths, problem, gamma_factors=parse_factors(gamma_factors), lam=lam),
           format_table, json_path)
