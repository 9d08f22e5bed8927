"""``psmpi data``: convert, inspect and fetch datasets."""
from __future__ import annotations

import json

import click

from .errors import friendly


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.2f} MB"


@click.group()
def data():
    """Convert, inspect and fetch datasets.

    \b
    Examples:
      psmpi data convert a9a.txt a9a.h5
      psmpi data info a9a.h5 --workers 20 --split dirichlet:0.5
      psmpi data fetch w8a            # into $PSMPI_DATA (default ~/.cache/psmpi/data)
      psmpi train --dataset w8a       # finds $PSMPI_DATA/w8a.h5
    """


@data.command()
@click.argument("src", metavar="IN")
@click.argument("out", metavar="OUT.h5")
@click.option("--n-features", type=click.IntRange(min=1), default=None,
              help="number of features (default: the largest index in the file)")
@click.option("--quiet", "-q", is_flag=True, help="print nothing on success")
@friendly
def convert(src, out, n_features, quiet):
    """LIBSVM/svmlight text (plain, .gz, .bz2, .xz) to HDF5 (CSR + labels).

    IN may also be any dataset (an embedded name, a .h5, synthetic:...), and an
    OUT not ending in .h5 writes LIBSVM text instead.  The output appears only
    when the conversion succeeded.
    """
    from ..data.convert import convert as run

    r = run(src, out, n_features=n_features)
    if not quiet:
        click.echo(f"wrote {r.path}: {r.n_rows} rows x {r.n_features} features, {r.nnz} nonzeros, "
                   f"{_mb(r.in_bytes)} -> {_mb(r.out_bytes)} in {r.seconds:.2f} s")


@data.command()
@click.argument("spec", metavar="FILE")
@click.option("--workers", "-n", type=click.IntRange(min=1), default=None,
              help="also show each worker's rows and label counts for this many workers")
@click.option("--split", default="contiguous", show_default=True,
              help="contiguous, shuffle, label-sorted or dirichlet:ALPHA")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of shuffle/dirichlet splits")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@friendly
def info(spec, workers, split, seed, as_json):
    """Rows, features, nonzeros, density, label counts, and a split's per-worker counts.

    FILE is a .h5, a LIBSVM file, an embedded name, a well-known name in the
    data directory, or synthetic:...
    """
    from ..data.splits import check_split
    from ..data.summary import format_summary, summarize

    check_split(split)
    s = summarize(spec, workers, split, seed)
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    for line in format_summary(s):
        click.echo(line)


@data.command()
@click.argument("name", required=False)
@click.option("--dir", "folder", type=click.Path(file_okay=False), default=None,
              help="where to put NAME.h5  [default: $PSMPI_DATA or ~/.cache/psmpi/data]")
@click.option("--url-base", default=None, help="mirror of the LIBSVM datasets site")
@click.option("--keep-text", is_flag=True, help="also keep the downloaded text file")
@click.option("--list", "list_", is_flag=True, help="list the known names and exit")
@friendly
def fetch(name, folder, url_base, keep_text, list_):
    """Download a LIBSVM dataset by name (a9a, w8a, mushrooms, phishing, real-sim,
    rcv1, mnist, cifar10, ...) and convert it to NAME.h5 (mnist and cifar10 as dense images).

    NAME may also be a path on the LIBSVM site, e.g. binary/madelon.
    """
    from ..data.fetch import CATALOG, LIBSVM_URL, fetch as run

    if list_:
        for k in sorted(CATALOG):
            click.echo(f"{k:12s} {LIBSVM_URL}{CATALOG[k]}")
        return
    if not name:
        raise click.UsageError("missing NAME (psmpi data fetch --list shows the known names)")
    path = run(name, folder, url_base, keep_text)
    click.echo(f"wrote {path}")
