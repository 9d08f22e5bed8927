"""`psmpi bench compress`, `psmpi bench wire` and `psmpi bench round` run at a
tiny size: a table on stdout, the JSON file with every row, one-line errors for
bad options."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from psmpi.bench.common import (
    Column,
    format_rows,
    interleaved,
    parse_fractions,
    parse_sizes,
    timeit,
)
from psmpi.cli import main
from psmpi.compressors import REGISTRY


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_bench_compress_tiny_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "c.json"
    r = invoke("bench", "compress", "--sizes", "3000,40000", "--fractions", "1%,10%", "--repeat", "2",
               "--warmup", "0", "--device", "cpu", "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    rows = res["rows"]
    names = {row["compressor"].partition(":")[0] for row in rows}
    assert names == set(REGISTRY)  # every compressor is measured
    assert "topk:1%+natural" in {row["compressor"] for row in rows}  # and a composition
    topk = [row for row in rows if row["compressor"].startswith("topk") and "+" not in row["compressor"]]
    assert len(topk) == 4 and all(row["same_set"] for row in topk)  # 2 sizes x 2 fractions, exact
    for row in rows:
        assert row["ms"] > 0 and row["copy_ms"] > 0 and row["gbps"] > 0 and row["device"] == "cpu"
        assert row["x_copy"] == pytest.approx(row["ms"] / row["copy_ms"])
    assert {row["k"] for row in topk} == {30, 300, 400, 4000}
    assert res["machine"]["numpy"] == np.__version__ and res["params"]["repeat"] == 2
    lines = r.output.splitlines()
    header = next(i for i, line in enumerate(lines) if "compressor" in line and "GB/s" in line)
    table = lines[header:header + 2 + len(rows)]
    assert len({len(line) for line in table}) == 1  # fixed width
    assert f"wrote {out}" in r.output


def test_bench_compress_subset_of_compressors():
    r = invoke("bench", "compress", "--sizes", "2000", "--fractions", "5%", "--repeat", "1", "--warmup", "0",
               "--compressors", "topk,sign")
    assert r.exit_code == 0
    assert "topk:5%" in r.output and "sign" in r.output and "natural" not in r.output


def test_bench_wire_tiny_reports_every_encoding_against_the_bound(tmp_path):
    out = tmp_path / "w.json"
    r = invoke("bench", "wire", "--sizes", "20000", "--fractions", "0.5%,10%", "--repeat", "2", "--warmup", "0",
               "--json", str(out))
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    for frac in (0.005, 0.1):
        group = {row["encoding"]: row for row in rows if row["frac"] == frac}
        auto = next(v for name, v in group.items() if name.startswith("auto="))
        coded = [group[e] for e in ("absolute", "bitmap", "elias-fano")]
        assert auto["bytes"] == min(row["bytes"] for row in coded)
        assert all(row["lossless"] for row in coded + [auto])
        assert all(row["bytes"] > row["bound_bytes"] for row in group.values())
        assert auto["x_bound"] < group["int32 (ref)"]["x_bound"] < group["int64 (ref)"]["x_bound"]
        assert auto["compress_ms"] > 0 and auto["codec_over_compress"] > 0
    assert "elias-fano" in r.output and "x bound" in r.output


def test_bench_wire_other_compressors_report_their_message_against_its_information_content(tmp_path):
    out = tmp_path / "w.json"
    r = invoke("bench", "wire", "--sizes", "3000,20000", "--compressors", "natural,qsgd:4", "--repeat", "2",
               "--warmup", "0", "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["rows"] == []  # no TopK rows unless asked for
    msgs = res["messages"]
    assert [(m["d"], m["compressor"]) for m in msgs] == [(3000, "natural"), (3000, "qsgd:4"), (20000, "natural"),
                                                         (20000, "qsgd:4")]
    for m in msgs:
        assert m["lossless"] and m["bytes"] > m["bound_bytes"] > 0
        assert m["x_bound"] == pytest.approx(m["bytes"] / m["bound_bytes"])
        assert m["bytes_per_coord"] == pytest.approx(m["bytes"] / m["d"])
        assert m["encode_ms"] > 0 and m["decode_ms"] > 0 and m["codec_over_compress"] > 0
    assert "x content" in r.output and "elias-fano" not in r.output


@pytest.mark.parametrize("args,msg", [
    (["wire", "--sizes", "100", "--compressors", "nope"], "unknown compressor"),
    (["wire", "--sizes", "100", "--compressors", "topk:200"], "K must be"),
    (["compress", "--sizes", "abc"], "bad size"),
    (["compress", "--sizes", "100", "--fractions", "200%"], "not in"),
    (["compress", "--sizes", "100", "--compressors", "nope"], "unknown compressor"),
    (["wire", "--sizes", "100", "--encodings", "golomb"], "unknown encoding"),
    (["wire", "--sizes", "100", "--encodings", "bitmap", "--compressors", "natural"], "add topk to --compressors"),
])
def test_bad_options_fail_with_one_line(args, msg):
    r = CliRunner().invoke(main, ["bench"] + args)
    assert r.exit_code == 2
    assert msg in r.output and "Traceback" not in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1


def test_gpu_device_without_a_gpu_is_a_clear_error(monkeypatch):
    from psmpi import backend

    monkeypatch.setattr(backend, "has_gpu", lambda: False)
    r = CliRunner().invoke(main, ["bench", "compress", "--sizes", "100", "--device", "gpu"])
    assert r.exit_code == 2 and "CuPy" in r.output


def test_parsers_and_table_helpers():
    assert parse_sizes("1e5, 10^3,42") == [100000, 1000, 42]
    assert parse_fractions("0.1%,1%,0.5") == [0.001, 0.01, 0.5]
    with pytest.raises(ValueError):
        parse_sizes("1.5")
    text = format_rows([Column("a", "A", ">5d"), Column("b", "bee", ">6.2f")], [{"a": 1, "b": 2.0}, {"a": 10}])
    assert text.splitlines() == ["    A     bee", "-----  ------", "    1    2.00", "   10       -"]


def test_timer_counts_warmup_and_repetitions():
    calls = []
    t = timeit(lambda: calls.append(1), repeat=4, warmup=2)
    assert len(calls) == 6 and t.reps == 4 and 0 <= t.best <= t.median
    seen = []
    res = interleaved({"a": lambda: seen.append("a"), "b": lambda: seen.append("b")}, repeat=3, warmup=1)
    assert seen == ["a", "b"] * 4 and res["a"].reps == 3


def test_bench_round_tiny_runs_both_runtimes_and_the_plain_loop(tmp_path):
    """Serial and mpirun -n 4, the dense baseline and the plain numpy loop, with the phase split."""
    import conftest

    out = tmp_path / "r.json"
    conftest.mpirun()  # skips without mpirun
    r = invoke("bench", "round", "--dataset", "breast-cancer", "--workers", "3", "--rounds", "6",
               "--sizes", "300", "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    runs = {(x["backend"], x["compressor"]): x for x in res["runs"]}
    assert set(runs) == {(b, c) for b in ("serial", "mpi -n 4", "mpi -n 3") for c in ("topk:1", "identity")}
    for x in runs.values():
        assert x["rounds"] == 6 and x["sec_per_round"] > 0
        assert x["phases_ms_per_round"]["forward_backward"] > 0
    assert "broadcast" in runs["mpi -n 4", "topk:1"]["phases_ms_per_round"]
    # Top-1 at d = 30: one 6-byte header, a one-byte index and a float32 value per worker (also with
    # two workers on one of the two worker ranks of mpirun -n 3)
    for b in ("serial", "mpi -n 4", "mpi -n 3"):
        assert runs[b, "topk:1"]["bytes_up_per_round"] == 3 * 11
    assert runs["serial", "identity"]["bytes_up_per_round"] == 3 * (6 + 4 * 30)
    naive = res["naive_numpy_loop"]
    assert naive["sec_per_round"] > 0 and naive["max_abs_diff_vs_serial_float64"] < 1e-12  # the same EF21
    assert [s["d"] for s in res["dense_vs_sparse_by_d"]] == [300, 300]
    assert "plain numpy loop" in r.output and "x the speed of the plain loop" in r.output
    floors = res["mpi_floor"]  # the same launches, collectives only, then with the local gradients
    assert [f["ranks"] for f in floors] == [4, 3] and all(f["rounds"] == 6 for f in floors)
    for floor in floors:
        assert 0 < floor["collectives_ms_per_round"] and 0 < floor["collectives_and_gradients_ms_per_round"]
        assert floor["gradient_cpu_us_in_job"] > 0 and floor["gradient_us_alone"] > 0
        assert floor["round_over_floor"] > 0 and f"= {floor['round_over_floor']:.2f}x this floor" in r.output
    assert "mpi floor, mpirun -n 4" in r.output


def test_the_floor_computes_a_ranks_gradients_as_the_runtime_does(monkeypatch):
    """Several logistic regression workers on one rank: one stacked product a round (LogRegBatch,
    as make_workers gives the runtime), the same gradients as one call per worker; one worker:
    its own call."""
    from psmpi.api import make_config
    from psmpi.bench.floor import _gradients
    from psmpi.problems.logreg import LogRegBatch
    from psmpi.runtime.common import describe_data, local_problem

    cfg = make_config(dict(dataset="breast-cancer", workers=4, quiet=True), "test")
    info = describe_data(cfg)
    problems = [local_problem(cfg, info, i) for i in range(4)]
    x = np.random.default_rng(0).standard_normal(info.dim)
    stacked = []
    real = LogRegBatch.grad_aux
    monkeypatch.setattr(LogRegBatch, "grad_aux", lambda self, *a: stacked.append(a[0]) or real(self, *a))
    got = _gradients(problems)(x, 7)
    assert stacked == [0, 1, 2, 3]
    for (g, _), p in zip(got, problems):
        assert g.tobytes() == p.grad_aux(x)[0].tobytes()
    stacked.clear()
    one = _gradients(problems[:1])(x, 8)
    assert stacked == [] and one[0][0].tobytes() == problems[0].grad_aux(x)[0].tobytes()


def test_bench_round_on_a_neural_network_splits_forward_backward_from_the_rest(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "nn.json"
    r = invoke("bench", "round", "--problem", "mlp:8", "--method", "ef21-sgdm", "--batch-size", "16",
               "--compressor", "topk:5%", "--workers", "2", "--rounds", "4", "--no-mpi", "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["dataset"] == "digits" and res["dim"] == 64 * 8 + 8 + 8 * 10 + 10
    assert res["naive_numpy_loop"] is None and res["mpi_floor"] == []
    runs = {x["compressor"]: x for x in res["runs"]}
    assert set(runs) == {"topk:5%", "identity"}
    for x in runs.values():
        p = x["phases_ms_per_round"]
        assert p["forward_backward"] > 0 and p["gradient_other"] >= 0 and p["compression"] > 0
        spent = sum(p.values()) / 1e3  # the phases lie inside the round
        assert spent <= x["sec_per_round"] * 1.05
        assert 0 < x["not_forward_backward"] < 1
        assert x["not_forward_backward"] == pytest.approx(1 - p["forward_backward"] / 1e3 / x["sec_per_round"])
        assert x["peak_rss_mb"]["process"] > 0
    assert runs["topk:5%"]["bytes_up_per_round"] < runs["identity"]["bytes_up_per_round"]
    assert "mlp:8 (d = 610)" in r.output and "fwd/bwd" in r.output and "memory: the model's flat" in r.output


def test_bench_round_repeat_keeps_the_fastest_run_of_each_row(tmp_path, monkeypatch):
    import psmpi.bench.round as br

    # (compressed row) x 3, (identity row) x 3, then the float64 reference of the plain loop
    times = iter([0.003, 0.001, 0.002, 0.005, 0.004, 0.006, 0.007])
    real = br.measure

    def measure(*args, **kw):
        row = real(*args, **kw)
        return dict(row, sec_per_round=next(times))

    monkeypatch.setattr(br, "measure", measure)
    out = tmp_path / "rep.json"
    r = invoke("bench", "round", "--dataset", "breast-cancer", "--workers", "2", "--rounds", "3", "--no-mpi",
               "--repeat", "3", "--json", str(out))
    assert r.exit_code == 0, r.output
    runs = {x["compressor"]: x for x in json.loads(out.read_text())["runs"]}
    assert runs["topk:1"]["sec_per_round"] == 0.001 and runs["identity"]["sec_per_round"] == 0.004
    assert runs["topk:1"]["runs"] == runs["identity"]["runs"] == 3
    assert "the fastest of 3 runs of each row" in r.output
    assert invoke("bench", "round", "--no-mpi", "--repeat", "0").exit_code == 2


def test_bench_round_runs_a_floor_job_right_before_each_mpi_run_of_the_compressed_row(monkeypatch):
    """--repeat 3 under MPI: floor, run, floor, run, floor, run for the compressed row (the identity
    row and the serial runtime without floors); the lowest floor against the fastest run, and each
    pair's own ratio."""
    import psmpi.bench.round as br

    calls, floors, secs = [], iter([2.0, 1.0, 4.0]), iter([0.003, 0.0025, 0.005])

    def measure(dataset, method, compressor, workers, rounds, backend, **kw):
        calls.append(("run", backend, compressor))
        sec = next(secs) if backend == "mpi" and compressor != "identity" else 0.01
        phases = dict.fromkeys(("forward_backward", "gradient_other", "compression", "encode", "decode_aggregate"),
                               0.1)
        return {"backend": backend if backend == "serial" else f"mpi -n {kw['ranks']}", "ranks": kw.get("ranks"),
                "method": method, "compressor": compressor, "rounds": rounds, "dim": 30, "sec_per_round": sec,
                "phases_ms_per_round": phases, "not_forward_backward": 0.5, "bytes_up_per_round": 11.0,
                "bytes_down_per_round": 240.0, "peak_rss_mb": {}, "x": None, "gamma": 0.1}

    def mpi_floor(dataset, workers, rounds, mpirun, ranks):
        calls.append(("floor", ranks))
        return {"ranks": ranks, "rounds": rounds, "collectives_ms_per_round": 0.1,
                "collectives_and_gradients_ms_per_round": next(floors), "gradient_cpu_us_in_job": 50.0,
                "gradient_us_alone": 40.0}

    monkeypatch.setattr(br, "measure", measure)
    monkeypatch.setattr(br, "mpi_floor", mpi_floor)
    res = br.run_round_bench("breast-cancer", "ef21", "topk:5%", 2, 3, mpi=True, mpirun=["mpirun"], ranks=[3],
                             repeat=3)
    mpi_calls = [c for c in calls if c[0] == "floor" or c[1] == "mpi"]
    assert mpi_calls == [("floor", 3), ("run", "mpi", "topk:5%")] * 3 + [("run", "mpi", "identity")] * 3
    (f,) = res["mpi_floor"]
    assert f["collectives_and_gradients_ms_per_round"] == 1.0 and f["round_ms"] == pytest.approx(2.5)
    assert f["round_over_floor"] == pytest.approx(2.5)
    assert f["pair_ratios"] == pytest.approx([1.5, 2.5, 1.25]) and f["pair_ratio_median"] == pytest.approx(1.5)
    out = br.format_table(res)
    assert "= 2.50x this floor; each run against the floor job just before it: 1.50x, 2.50x, 1.25x (median 1.50x)" \
        in out


@pytest.mark.parametrize("args,message", [(["--problem", "logreg"], "--problem takes a neural network"),
                                          (["--batch-size", "4"], "--batch-size goes with --problem"),
                                          (["--gamma", "0.5"], "--gamma goes with --problem")])
def test_bench_round_refuses_a_convex_problem_or_a_batch_size_alone(args, message):
    r = invoke("bench", "round", "--dataset", "breast-cancer", "--no-mpi", "--rounds", "2", *args)
    assert r.exit_code == 2 and message in r.output


def test_bench_round_on_the_emulated_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PSMPI_EMULATE_GPU", "1")
    out = tmp_path / "g.json"
    r = invoke("bench", "round", "--dataset", "breast-cancer", "--workers", "2", "--rounds", "4", "--no-mpi",
               "--device", "gpu", "--json", str(out))
    assert r.exit_code == 0, r.output
    assert "workers on the gpu" in r.output
    assert json.loads(out.read_text())["device"] == "gpu"


def test_bench_startup_tiny_times_the_three_jobs_side_by_side(tmp_path):
    """mpirun -n 3: the bare barrier, the import floor and one training round, with the ratios to the floor."""
    import conftest

    conftest.mpirun()  # skips without mpirun
    out = tmp_path / "s.json"
    r = invoke("bench", "startup", "-n", "3", "--repeat", "2", "--warmup", "0", "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    rows = {row["job"]: row for row in res["rows"]}
    assert list(rows) == ["mpi", "floor", "train"] and res["params"]["ranks"] == 3
    assert "-n 3" in rows["train"]["command"] and "psmpi train --iters 1 --quiet --out TMP.h5 --overwrite" in rows["train"]["command"]
    assert "import numpy, scipy.sparse, h5py" in rows["floor"]["command"] and "Barrier()" in rows["mpi"]["command"]
    for row in rows.values():
        assert row["reps"] == 2 and row["best_s"] > 0 and row["cpu_s"] > 0
        assert row["x_floor"] == pytest.approx(row["best_s"] / rows["floor"]["best_s"])
    assert rows["floor"]["x_floor"] == 1.0 and res["train_over_floor"] == rows["train"]["x_floor"]
    assert res["train_wrote_output"]  # the train job really ran its round and wrote its file
    assert "train / floor:" in r.output and f"wrote {out}" in r.output


def test_bench_startup_reports_a_failing_train_job_in_one_line():
    import conftest

    conftest.mpirun()
    r = CliRunner().invoke(main, ["bench", "startup", "-n", "2", "--repeat", "1", "--warmup", "0",
                                  "--dataset", "no-such-dataset"])
    assert r.exit_code == 2 and "failed" in r.output and "no-such-dataset" in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1


def _namespace_or_skip():
    from psmpi.bench.network import check_namespace

    try:
        check_namespace()
    except RuntimeError as e:
        pytest.skip(f"no shaped network namespace here: {e}")


@pytest.mark.mpi
def test_bench_network_tiny_runs_over_a_shaped_link(tmp_path):
    _namespace_or_skip()
    out = tmp_path / "n.json"
    r = invoke("bench", "network", "--rate", "1gbit", "--sizes", "1000", "--fractions", "10%", "--workers", "2",
               "--iters", "3", "--methods", "gd,ef21,ef21-bc", "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    (link,) = res["links"]
    assert link["ranks"] == 3 and link["bcast_bits_per_s"] > 0 and link["gather_bits_per_s"] > 0
    rows = {(row["method"], row["compressor"]): row for row in res["rows"]}
    assert set(rows) == {("gd", "identity"), ("ef21", "topk:10%"), ("ef21-bc", "topk:10%")}
    gd, ef, bc = rows["gd", "identity"], rows["ef21", "topk:10%"], rows["ef21-bc", "topk:10%"]
    assert gd["dim"] == ef["dim"] == 1000 and ef["k"] == 100 and gd["rounds"] == 3
    assert gd["bytes_up_per_round"] > ef["bytes_up_per_round"] > 0  # Top-10% sends fewer bytes than dense
    assert gd["bytes_down_per_round"] == ef["bytes_down_per_round"] > 0  # x goes down dense in both
    for row in rows.values():
        assert row["ms_per_round"] > 0 and row["downlink_ms"] >= 0 and row["target_abs"] > 0
    # EF21-BC's broadcast is Top-10% after x^0 and g^0 (dense, rounds 0 and 1): less down than x every round
    assert 0 < bc["bytes_down_per_round"] < ef["bytes_down_per_round"] and not res["notes"]
    assert "link check" in r.output and "Bcast Mbit/s" in r.output and f"wrote {out}" in r.output


def test_bench_network_bad_rate_is_one_line():
    r = invoke("bench", "network", "--rate", "fast")
    assert r.exit_code == 2 and "bad rate 'fast'" in r.output


def test_bench_network_without_a_namespace_says_so_in_one_line(monkeypatch):
    import psmpi.bench.network as network

    denied = ["sh", "-c", "echo 'unshare: unshare failed: Operation not permitted' >&2; exit 1"]
    monkeypatch.setattr(network, "shaped", lambda rate, bps, cmd: denied)
    r = invoke("bench", "network", "--sizes", "1000", "--workers", "2", "--iters", "3")
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0
    assert "cannot create a shaped network namespace" in r.output and "Operation not permitted" in r.output


@pytest.mark.mpi
def test_bench_network_gamma_factors_run_every_multiple_and_report_the_best(tmp_path):
    _namespace_or_skip()
    out = tmp_path / "n.json"
    r = invoke("bench", "network", "--rate", "1gbit", "--sizes", "1000", "--fractions", "10%", "--workers", "2",
               "--iters", "6", "--eval-every", "1", "--methods", "gd,ef21,ef21-bc", "--gamma-factors", "1,64",
               "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["params"]["gamma_factors"] == [1.0, 64.0]
    rows = {row["method"]: row for row in res["rows"]}
    for row in rows.values():
        runs = row["runs"]
        assert [run["factor"] for run in runs] == [1.0, 64.0]
        assert runs[1]["gamma"] == pytest.approx(64 * runs[0]["gamma"])  # each a multiple of the same step
        for run in runs:  # the status says what the run's ||grad f||^2 did
            assert run["rounds"] == 6  # every serial run goes all its rounds
            if run["target_hit"] is not None:
                assert run["status"] == ("left" if run["gns_final"] > run["target_abs"] else
                                         "f rose" if run["f_final"] > run["f0"] else "reached")
            else:
                assert run["status"] == ("growing" if run["gns_final"] > run["gns0"] else "not reached")
        reached = [run for run in runs if run["status"] == "reached"]
        best = min(reached, key=lambda run: run["target_hit"]) if reached else {}
        assert row["factor"] == best.get("factor") and row["target_hit"] == best.get("target_hit")
        if reached:  # timed over the link: the MPI run ends on the serial run's iterate, bit for bit
            assert row["time_to_target_s"] > 0 and row["same_as_serial"]
            assert row["gns_at_target_mpi"] == best["gns_at_target"] <= row["target_abs"]
        else:
            assert row["time_to_target_s"] is None and row["timed_factor"] == 1.0
    gd1, gd64 = rows["gd"]["runs"]
    assert gd1["status"] == "reached" and gd64["status"] == "growing"  # 64/L is far past GD's stable steps
    assert rows["gd"]["factor"] == 1.0 and rows["gd"]["target_x_dense"] == 1.0
    # EF21-BC has no theoretical step: each factor multiplies EF21's for the same compressor
    assert [b["gamma"] for b in rows["ef21-bc"]["runs"]] == [e["gamma"] for e in rows["ef21"]["runs"]]
    assert "every serial run (status" in r.output and "growing" in r.output


@pytest.mark.parametrize("args,message", [
    (["--gamma-factors", "1,0"], "bad --gamma-factors value 0"),
    (["--gamma-factors", "-4"], "bad --gamma-factors value -4"),
    (["--gamma-factors", "1,x"], "bad --gamma-factors value 'x'"),
    (["--gamma-factors", "nan"], "bad --gamma-factors value nan"),
    (["--gamma-factors", "4,4"], "--gamma-factors: 4 is given twice"),
    (["--lam", "-1"], "--lam must be a non-negative number"),
    (["--problem", "mlp", "--lam", "0.01"], "--problem mlp has none"),
    (["--methods", "gd,ef21-bc"], "ef21-bc runs at EF21's theoretical step for the same compressor: add ef21"),
])
def test_bench_network_bad_step_options_are_one_line(args, message):
    r = invoke("bench", "network", "--sizes", "1000", "--workers", "2", "--iters", "3", *args)
    assert r.exit_code == 2 and message in r.output and r.output.strip().count("\n") == 0, r.output


def test_bench_network_on_the_mlp_runs_at_multiples_of_a_base_step(tmp_path):
    """A network has no theoretical step: --gamma-factors multiply the base step MLP_STEP."""
    pytest.importorskip("torch")
    from psmpi.bench.network import MLP_STEP, check_namespace

    try:
        check_namespace()
    except RuntimeError as e:
        pytest.skip(str(e))
    out = tmp_path / "mlp.json"
    r = invoke("bench", "network", "--problem", "mlp", "--sizes", "1000", "--fractions", "10%", "--methods", "gd,ef21",
               "--workers", "2", "--iters", "3", "--eval-every", "3", "--gamma-factors", "1,4", "--json", str(out))
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert [x["method"] for x in rows] == ["gd", "ef21"]
    for x in rows:
        assert x["gamma_x1"] == MLP_STEP
        assert [run["gamma"] for run in x["runs"]] == [MLP_STEP, 4 * MLP_STEP]


def test_bench_network_run_status_and_best_run():
    from psmpi.bench.network import best_run, run_status

    g0 = 1.0
    assert run_status([g0, 0.5, 0.05, 0.08], 0.1, False) == "reached"
    assert run_status([g0, 0.05, 0.2], 0.1, False) == "left"  # reached once, above the target at the end
    assert run_status([g0, 0.5, 0.05], 0.1, False, loss=[0.69, 0.5, 0.3]) == "reached"
    assert run_status([g0, 0.5, 0.05], 0.1, False, loss=[0.69, 0.9, 0.95]) == "f rose"  # flat, but higher f
    assert run_status([g0, 0.5, 0.3], 0.1, False) == "not reached"
    assert run_status([g0, 3.0, 2.0], 0.1, False) == "growing"
    assert run_status([g0, 0.05, np.inf], 0.1, False) == "diverged"
    assert run_status([g0, 1e21], 0.1, True) == "diverged"  # stopped by train's divergence check
    runs = [{"factor": 1.0, "status": "not reached", "target_hit": None},
            {"factor": 4.0, "status": "reached", "target_hit": 12},
            {"factor": 16.0, "status": "reached", "target_hit": 9},
            {"factor": 64.0, "status": "reached", "target_hit": 9},
            {"factor": 256.0, "status": "diverged", "target_hit": None},
            {"factor": 1024.0, "status": "left", "target_hit": 1}]
    assert best_run(runs)["factor"] == 16.0  # the fewest rounds of those that stayed, then the smaller step
    assert best_run([runs[0], runs[4], runs[5]]) is None


@pytest.mark.mpi
def test_bench_network_reports_a_run_train_stopped_as_diverged():
    import conftest
    from psmpi.bench.common import run_training
    from psmpi.bench.network import measure, trajectory

    # 1/2 ||x||^2 from x^0 = 1 with gamma = 3: x^t = (-2)^t, stopped by train's divergence check
    args = ["--problem", "quadratic", "--dataset", "quad:identity,d=50", "--x0", "ones", "--workers", "2",
            "--method", "gd", "--compressor", "identity", "--gamma", "3", "--iters", "100", "--eval-every", "1"]
    prefix = conftest.mpirun() + ["-n", "3"]
    with pytest.raises(RuntimeError, match="diverged at round"):
        run_training(prefix, [*args, "--quiet"])
    row = measure(prefix, args)  # under mpirun a diverged run still gives its per-round times
    assert row["rounds"] < 100 and row["ms_per_round"] > 0
    run = trajectory(args, None, 0.1)
    assert run["status"] == "diverged" and run["stop"] == "diverged" and run["target_hit"] is None
    assert run["rounds"] == row["rounds"] and run["gns_final"] > 1e20 * run["gns0"]
