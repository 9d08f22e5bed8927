"""The LIBSVM reader: exactly scikit-learn's matrix, and one clear line per bad input."""
from __future__ import annotations

import bz2
import gzip
import lzma

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_svmlight_file

from conftest import libsvm_file
from psmpi.data import DataError, open_dataset
from psmpi.data import libsvm
from psmpi.data.libsvm import iter_blocks, read_libsvm

REAL = ["a9a", "mushrooms", "phishing", "w8a"]


def assert_same_as_sklearn(path, **kw):
    X, y = read_libsvm(str(path), **kw)
    Xr, yr = load_svmlight_file(str(path), dtype=np.float64, **kw)
    assert X.shape == Xr.shape
    assert np.array_equal(X.indptr, Xr.indptr)
    assert np.array_equal(X.indices, Xr.indices)
    assert np.array_equal(X.data.view(np.int64), Xr.data.view(np.int64))  # bitwise, signed zeros included
    assert np.array_equal(y, yr)
    return X, y


@pytest.mark.parametrize("name", REAL)
def test_real_file_matches_sklearn_exactly(name):
    path = libsvm_file(name)
    if path is None:
        pytest.skip(f"../shared/data/libsvm/{name}.txt not present")
    X, y = assert_same_as_sklearn(path)
    assert X.nnz > 0 and len(np.unique(y)) == 2


def test_real_file_parsed_in_small_blocks_matches_whole(tmp_path):
    path = libsvm_file("phishing")
    if path is None:  # a generated stand-in
        path = tmp_path / "gen.txt"
        rng = np.random.default_rng(1)
        path.write_text("".join(f"{i % 2} " + " ".join(f"{j}:{rng.random():.5f}" for j in range(1, 40)) + "\n"
                                for i in range(2000)))
    whole = list(iter_blocks(str(path)))
    small = list(iter_blocks(str(path), block_bytes=4096))
    assert len(small) > 10 * len(whole)
    for field in ("labels", "row_nnz", "indices", "data", "row_lines"):
        assert np.array_equal(np.concatenate([getattr(b, field) for b in whole]),
                              np.concatenate([getattr(b, field) for b in small]))


TRICKY = """\
# a comment line
1 qid:3 1:0.5 3:-2.25 10:1e-3
-1 2:1E+2 4:+7 5:.5 6:5. 7:-0 8:0

+1.5 1:0.1 2:0.30000000000000004 3:123456789012345678901234 4:1e-310 5:2.2250738585072011e-308
0\t1:1\t9:3.141592653589793238462643383279   # trailing comment 11:4
2 1:1e22 2:1e23 3:9007199254740993 4:-1.7976931348623157e308 5:4.9e-324 6:0.000000000000000000000000001
3 1:1_0\r
-2
7 12:0.1234567890123456789 13:-00012.50
"""


def test_tricky_numbers_comments_qid_and_blank_lines_match_sklearn(tmp_path):
    p = tmp_path / "tricky.txt"
    p.write_text(TRICKY)
    X, y = assert_same_as_sklearn(p)
    assert X.shape == (8, 13)
    assert X[0, 0] == 0.5 and X[4, 1] == 1e23  # qid skipped; 1e23 rounds like float('1e23')
    assert X[2, 1] == 0.30000000000000004
    assert list(X[1].indices) == [1, 3, 4, 5, 6, 7] and np.signbit(X[1].data[4]) and X[1].data[5] == 0.0


@pytest.mark.parametrize("opener,suffix", [(gzip.open, ".gz"), (bz2.open, ".bz2"), (lzma.open, ".xz")])
def test_compressed_files_read_like_plain(tmp_path, opener, suffix):
    plain = tmp_path / "t.txt"
    plain.write_text(TRICKY)
    packed = tmp_path / f"t{suffix}"
    with opener(packed, "wb") as f:
        f.write(TRICKY.encode())
    X, y = read_libsvm(str(plain))
    Xc, yc = read_libsvm(str(packed))
    assert (X != Xc).nnz == 0 and np.array_equal(X.indptr, Xc.indptr) and np.array_equal(y, yc)


def test_n_features_given_widens_the_matrix(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("1 1:1 3:2\n-1 2:1\n")
    X, _ = assert_same_as_sklearn(p, n_features=10)
    assert X.shape == (2, 10)


number = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-10 ** 20, 10 ** 20).map(str),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-999, 999), st.integers(-30, 30)),
    st.builds(lambda a, b: f"{a}.{b}", st.integers(-99, 99), st.integers(0, 10 ** 18)),
)
row = st.tuples(st.integers(-3, 3), st.lists(st.tuples(st.integers(1, 30), number), max_size=8))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=12))
def test_random_well_formed_files_match_sklearn(tmp_path_factory, rows):
    lines = []
    for label, feats in rows:
        idx = sorted({i for i, _ in feats})
        vals = dict(feats)
        lines.append(" ".join([str(label)] + [f"{i}:{vals[i]}" for i in idx]))
    if not any(f for _, f in rows):
        lines[0] += " 1:1"
    p = tmp_path_factory.mktemp("h") / "r.txt"
    p.write_text("\n".join(lines) + "\n")
    assert_same_as_sklearn(p)


# ---------------------------------------------------------------- bad input ---
BAD = [
    # (file text, line of the error, words in the message)
    ("1 1:1\n1 2:x\n", 2, "value 'x' is not a number"),
    ("1 1:1\n\n-1 2:1 5\n", 3, "malformed token '5'"),
    ("1 1:1 2::3\n", 1, "malformed token '2::3'"),
    ("1 1:\n", 1, "malformed token '1:'"),
    ("1 :4\n", 1, "malformed token ':4'"),
    ("1 1:1\n-1 x:1\n", 2, "feature index 'x' is not an integer"),
    ("1 1:1\n1 3:1 2:1\n", 2, "feature indices must increase: 2 after 3"),
    ("1 1:1\n1 3:1 3:1\n", 2, "feature indices must increase: 3 after 3"),
    ("1 1:1\n1 0:1 2:1\n", 2, "feature index 0 is below 1"),
    ("1 1:1\n1 -4:1\n", 2, "feature index -4 is below 1"),
    ("1 1:1\n1 2:nan\n", 2, "value 'nan' is not finite"),
    ("1 1:1\n1 2:inf\n", 2, "value 'inf' is not finite"),
    ("1 1:1\n1 2:1e999\n", 2, "value '1e999' is not finite"),
    ("1 1:1\nnan 2:1\n", 2, "label 'nan' is not finite"),
    ("1 1:1\nabc 2:1\n", 2, "label 'abc' is not a number"),
    ("1 1:1\n2:1 3:1\n", 2, "expected a label"),
    ("1 1:1\n1 2:1\n1 2:1 1:1 x\n1 1:nan\n", 3, "feature indices must increase"),  # first error wins
]


@pytest.mark.parametrize("text,line,words", BAD)
def test_bad_input_names_file_and_line(tmp_path, text, line, words):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        read_libsvm(str(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: "), msg
    assert words in msg
    assert "\n" not in msg


def test_error_line_is_counted_across_blocks(tmp_path):
    p = tmp_path / "big.txt"
    good = "".join(f"{i % 2} 1:{i} 2:0.5\n" for i in range(5000))
    p.write_text(good + "1 1:1 2:oops\n")
    for block in (None, 1000):
        with pytest.raises(DataError, match=rf"^{p}:5001: value 'oops' is not a number"):
            list(iter_blocks(str(p), block_bytes=block))


def test_empty_missing_and_featureless_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.txt: empty file"):
        read_libsvm(str(empty))
    comments = tmp_path / "comments.txt"
    comments.write_text("# nothing\n\n   \n")
    with pytest.raises(DataError, match="empty file"):
        read_libsvm(str(comments))
    with pytest.raises(DataError, match=r"nope\.txt: no such file"):
        read_libsvm(str(tmp_path / "nope.txt"))
    labels_only = tmp_path / "labels.txt"
    labels_only.write_text("1\n-1\n")
    with pytest.raises(DataError, match="no feature values"):
        read_libsvm(str(labels_only))


def test_index_beyond_n_features_names_the_line(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("1 1:1\n1 2:1 7:1\n")
    with pytest.raises(DataError, match=rf"^{p}:2: feature index 7 exceeds --n-features 5"):
        read_libsvm(str(p), n_features=5)


def test_corrupt_compressed_file_is_one_line(tmp_path):
    p = tmp_path / "t.bz2"
    p.write_bytes(bz2.compress(b"1 1:1\n" * 1000)[:50])
    with pytest.raises(DataError, match="cannot decompress"):
        read_libsvm(str(p))


def test_open_dataset_reads_text_files_by_path(tmp_path):
    p = tmp_path / "small.txt"
    p.write_text("1 1:1 3:2\n-1 2:1\n")
    ds = open_dataset(str(p))
    assert (ds.n_rows, ds.n_features, ds.name) == (2, 3, "small")
    assert np.array_equal(ds.labels, [1.0, -1.0])


def test_fast_float_path_equals_python_float():
    rng = np.random.default_rng(0)
    texts = [repr(float(v)) for v in rng.standard_normal(3000) * 10.0 ** rng.integers(-30, 30, 3000)]
    texts += [f"{v:.6f}" for v in rng.random(2000)] + ["1", "-0", "+5", ".5", "5.", "1e5", "-1E-5", "0.1"]
    buf = " ".join(texts).encode()
    b = np.frombuffer(buf, dtype=np.uint8)
    lengths = np.array([len(t) for t in texts])
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    vals, ok = libsvm.parse_floats(b, starts, lengths)
    assert ok.all()
    assert np.array_equal(vals, np.array([float(t) for t in texts]))
    assert np.array_equal(np.signbit(vals), np.signbit([float(t) for t in texts]))


def test_writer_uses_the_shortest_exact_form_and_reads_back_bit_for_bit(tmp_path):
    """docs/data.md: values in their shortest exact form; 1.0 is '1' (a9a's text would grow by a third
    with '1.0'), and every value, signed zeros and extreme exponents included, reads back exactly."""
    import scipy.sparse as sp

    from psmpi.data.libsvm import exact_text, read_libsvm, write_libsvm

    values = np.array([1.0, -0.0, 0.1, 1e-5, 1e16, -2.5, 1e300, 5e-324, 123456789.0, 1 / 3])
    X = sp.csr_matrix((values, np.arange(len(values)), [0, 5, len(values)]), shape=(2, len(values)))
    path = tmp_path / "v.txt"
    write_libsvm(str(path), X, np.array([1.0, -1.0]))
    text = path.read_text()
    assert text.splitlines()[0] == "1 1:1 2:-0 3:0.1 4:1e-5 5:1e16"
    assert text.splitlines()[1].startswith("-1 6:-2.5 7:1e300 8:5e-324 9:123456789 10:")
    Y, labels = read_libsvm(str(path))
    assert np.array_equal(Y.data.view(np.int64), X.data.view(np.int64))  # bit for bit, -0 included
    assert list(labels) == [1.0, -1.0]
    rng = np.random.default_rng(0)
    for v in np.concatenate([rng.standard_normal(200), rng.standard_normal(200) * 1e-200, [2.0 ** 60, 1e22]]):
        assert float(exact_text(v)) == v and len(exact_text(v)) <= len(repr(float(v)))
