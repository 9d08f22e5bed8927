"""Image datasets: dense float32 rows, integer labels and an image shape.

``open_images(spec)`` gives a :class:`psmpi.data.Dataset` with two extras,
``image_shape`` (channels first, e.g. (1, 28, 28)) and ``read_dense(rows)``
(float32 rows, in the order asked); ``read_rows`` still gives CSR rows, so the
convex problems run on the same files.  Specs:

``digits``
    The embedded scikit-learn digits (1797 images, 8 x 8, 10 classes), as the
    embedded loader scales them (each pixel position divided by its maximum).
``mnist``, ``mnist.t``, ``cifar10``, ``cifar10.t``
    Files fetched by ``psmpi data fetch NAME`` (or :func:`fetch_mnist`,
    :func:`fetch_cifar10`) into the data directory, converted once from the
    LIBSVM site to the dense HDF5 layout of :mod:`psmpi.data.store`; pixel
    values are divided by 255 when the source's are above 1.  CIFAR-10's
    3072 features are, as the LIBSVM page states, the R, G, B planes of the
    32 x 32 image in turn, each row by row: shape (3, 32, 32).
a ``.h5`` file with an ``image_shape`` attribute (:func:`write_images`)
    Any dense file; a CSR file (``psmpi data convert``) of one of the names
    above also opens, with that name's image shape.

A worker reads only its rows: ``load_shard(ds, ..., dense=True)`` reads the
chunks holding them and nothing else.
"""
from __future__ import annotations

import os

import numpy as np

from .core import DataError, Dataset, open_dataset, stem
from .store import COMPRESSION, DENSE_CHUNK_BYTES, DENSE_FORMAT, VERSION, AtomicH5

# name -> image shape (channels, height, width); the fetched names' LIBSVM paths are in fetch.CATALOG
IMAGE_SHAPES = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "mnist.t": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar10.t": (3, 32, 32),
}
FETCHED = ("mnist", "mnist.t", "cifar10", "cifar10.t")
PIXEL_MAX = 255.0


def _checked(ds: Dataset, shape, spec: str):
    if shape is None:
        raise DataError(f"dataset '{spec}' has no image shape: use digits, a fetched image dataset "
                        f"({', '.join(FETCHED)}) or a file written by psmpi.data.images.write_images")
    if int(np.prod(shape)) != ds.n_features:
        raise DataError(f"dataset '{spec}': image shape {tuple(shape)} does not match its {ds.n_features} features")
    ds.image_shape = tuple(int(v) for v in shape)
    return ds


def open_images(spec: str) -> Dataset:
    """An image dataset by name or file (see the module docstring); DataError with one line otherwise."""
    ds = open_dataset(spec)
    shape = ds.image_shape
    if shape is None:
        shape = IMAGE_SHAPES.get(spec) or IMAGE_SHAPES.get(ds.name) or IMAGE_SHAPES.get(stem(spec))
    return _checked(ds, shape, spec)


# ------------------------------------------------------------------ writing ---
class ImageWriter(AtomicH5):
    """Append blocks of dense rows to a ``psmpi-dense`` file; ``close()`` renames it into place.

    Use as a context manager: an exception removes the temporary file.
    """

    def __init__(self, path: str, image_shape, name: str | None = None, source: str | None = None):
        self.image_shape = tuple(int(v) for v in image_shape)
        self.n_features = int(np.prod(self.image_shape))
        self._create(path)
        self.name = name or stem(self.path)
        self.source = source or ""
        per = max(1, DENSE_CHUNK_BYTES // (4 * self.n_features))
        self.X = self.f.create_dataset("X", shape=(0, self.n_features), maxshape=(None, self.n_features),
                                       chunks=(per, self.n_features), dtype=np.float32, **COMPRESSION)
        self.labels = self.f.create_dataset("labels", shape=(0,), maxshape=(None,), chunks=(1 << 15,),
                                            dtype=np.int64, **COMPRESSION)

    def append(self, X, labels):
        X = np.asarray(X, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features or len(labels) != len(X):
            raise DataError(f"{self.path}: rows of shape {X.shape} with {len(labels)} labels do not fit "
                            f"images of {self.image_shape}")
        if not np.all(np.isfinite(labels) & (labels == np.round(labels))):
            raise DataError(f"{self.path}: image labels must be integers")
        n = self.X.shape[0]
        self.X.resize((n + len(X), self.n_features))
        self.labels.resize((n + len(X),))
        if len(X):
            self.X[n:] = X
            self.labels[n:] = labels.astype(np.int64)

    def close(self) -> str:
        self.f.attrs.update(format=DENSE_FORMAT, version=VERSION, n_rows=self.X.shape[0], n_features=self.n_features,
                            image_shape=np.array(self.image_shape, dtype=np.int64), name=self.name,
                            source=self.source)
        return self._finish()


def write_images(path: str, X, labels, image_shape, name: str | None = None, source: str | None = None) -> str:
    """Dense rows (any float array, rows x prod(image_shape)) and integer labels to ``path`` (atomically)."""
    with ImageWriter(path, image_shape, name=name, source=source) as w:
        w.append(X, labels)
        return w.close()


def text_to_images(src: str, out: str, image_shape, name: str | None = None, source: str | None = None) -> str:
    """A LIBSVM text file of pixel rows (plain or compressed) to a dense image file, block by block.

    Pixels are divided by 255 when the first block holds a value above 1 (raw 0..255 pixels)."""
    from .libsvm import iter_blocks

    scale = None
    with ImageWriter(out, image_shape, name=name or stem(src), source=source or os.path.basename(src)) as w:
        for blk in iter_blocks(src):
            if len(blk.indices) and blk.indices.max() >= w.n_features:
                raise DataError(f"{src}: feature index {int(blk.indices.max()) + 1} beyond the "
                                f"{w.n_features} pixels of a {image_shape} image")
            if scale is None:
                scale = PIXEL_MAX if len(blk.data) and blk.data.max() > 1.0 else 1.0
            X = np.zeros((len(blk.labels), w.n_features), dtype=np.float32)
            X[np.repeat(np.arange(len(blk.labels)), blk.row_nnz), blk.indices] = blk.data / scale
            w.append(X, blk.labels)
        if w.X.shape[0] == 0:
            raise DataError(f"{src}: empty file (no data lines)")
        return w.close()


# ----------------------------------------------------------------- fetching ---
def fetch_mnist(folder: str | None = None, url_base: str | None = None) -> list[str]:
    """MNIST train and test (``mnist.h5``, ``mnist.t.h5``) from the LIBSVM site -> their paths."""
    from .fetch import fetch

    return [fetch(name, folder, url_base) for name in ("mnist", "mnist.t")]


def fetch_cifar10(folder: str | None = None, url_base: str | None = None) -> list[str]:
    """CIFAR-10 train and test (``cifar10.h5``, ``cifar10.t.h5``) from the LIBSVM site -> their paths."""
    from .fetch import fetch

    return [fetch(name, folder, url_base) for name in ("cifar10", "cifar10.t")]
