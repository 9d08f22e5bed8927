"""Download a LIBSVM dataset by its well-known name and convert it to HDF5."""
from __future__ import annotations

import os
import secrets
import sys
import urllib.error
import urllib.request

from .core import DataError, data_dir

LIBSVM_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/"

# name: path under LIBSVM_URL
CATALOG = {
    **{f"a{i}a": f"binary/a{i}a" for i in range(1, 10)},
    **{f"a{i}a.t": f"binary/a{i}a.t" for i in range(1, 10)},
    **{f"w{i}a": f"binary/w{i}a" for i in range(1, 9)},
    **{f"w{i}a.t": f"binary/w{i}a.t" for i in range(1, 9)},
    "mushrooms": "binary/mushrooms",
    "phishing": "binary/phishing",
    "real-sim": "binary/real-sim.bz2",
    "rcv1": "binary/rcv1_train.binary.bz2",
    "news20": "binary/news20.binary.bz2",
    "gisette": "binary/gisette_scale.bz2",
    "ijcnn1": "binary/ijcnn1.bz2",
    "covtype": "binary/covtype.libsvm.binary.scale.bz2",
    "splice": "binary/splice",
    "sonar": "binary/sonar_scale",
    "german": "binary/german.numer_scale",
    "diabetes": "binary/diabetes_scale",
    "mnist": "multiclass/mnist.bz2",
    "mnist.t": "multiclass/mnist.t.bz2",
    "cifar10": "multiclass/cifar10.bz2",
    "cifar10.t": "multiclass/cifar10.t.bz2",
}


def _progress(total, desc):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False, disable=not sys.stderr.isatty())


def download(url: str, dest: str, timeout: float = 30.0, by_hand: str | None = None) -> None:
    """``url`` to ``dest`` (atomically); DataError with one line on any failure.
    ``by_hand`` says what to do with a file downloaded by hand when there is no network."""
    tmp = f"{dest}.{secrets.token_hex(4)}.part"
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise DataError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            what = by_hand or "run `psmpi data convert FILE OUT.h5`"
            raise DataError(f"cannot download {url}: {reason} (no network? download the file by hand and {what})") \
                from None
        with resp, open(tmp, "wb") as out:
            size = resp.headers.get("Content-Length")
            with _progress(int(size) if size and size.isdigit() else None, os.path.basename(dest)) as bar:
                while True:
                    try:
                        buf = resp.read(1 << 20)
                    except OSError as e:
                        raise DataError(f"cannot download {url}: connection lost ({e})") from None
                    if not buf:
                        break
                    out.write(buf)
                    bar.update(len(buf))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _by_hand(name: str, folder: str) -> str:
    """Where a file downloaded by hand goes so that ``--dataset NAME`` finds it."""
    env = "" if os.path.abspath(folder) == os.path.abspath(data_dir()) else f" with PSMPI_DATA={folder}"
    return (f"run `psmpi data convert FILE {os.path.join(folder, name + '.h5')}` (or copy it to "
            f"{os.path.join(folder, name)}); then --dataset {name} finds it{env}")


def fetch(name: str, folder: str | None = None, url_base: str | None = None, keep_text: bool = False) -> str:
    """Download ``name`` (a key of CATALOG, or a path such as 'binary/x.bz2'
    under the LIBSVM site) into ``folder`` and convert it to NAME.h5 -> its path.

    The image datasets (mnist, mnist.t, cifar10, cifar10.t) become dense
    image files (:mod:`psmpi.data.images`), the others CSR files."""
    from .convert import convert
    from .images import FETCHED, IMAGE_SHAPES, text_to_images

    if name in CATALOG:
        rel = CATALOG[name]
    elif "/" in name and not name.startswith("/") and ".." not in name:
        rel = name
        name = os.path.basename(name)
        for ext in (".bz2", ".gz", ".xz"):
            name = name[: -len(ext)] if name.endswith(ext) else name
    else:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(sorted(CATALOG))} "
                        f"(or a path under {LIBSVM_URL}, e.g. binary/a9a)")
    folder = folder or data_dir()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {folder}: {e.strerror}") from None
    url = (url_base or LIBSVM_URL).rstrip("/") + "/" + rel
    raw = os.path.join(folder, f".{os.path.basename(rel)}.{secrets.token_hex(4)}.download")
    out = os.path.join(folder, f"{name}.h5")
    download(url, raw, by_hand=_by_hand(name, folder))
    try:
        if name in FETCHED:
            text_to_images(raw, out, IMAGE_SHAPES[name], name=name, source=url)
        else:
            convert(raw, out, name=name, source=url)
        if keep_text:
            os.replace(raw, os.path.join(folder, os.path.basename(rel)))
    finally:
        if os.path.exists(raw):
            os.remove(raw)
    return out
