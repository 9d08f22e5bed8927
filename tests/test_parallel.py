"""psmpi.parallel: the thread count, the ranges, and results in item order."""
import threading

import pytest

from psmpi import parallel
from psmpi.config import ConfigError


@pytest.fixture
def fresh(monkeypatch):
    """threads() and the pool are cached per process: clear them around each test."""
    for var in ("PSMPI_THREADS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_CPUS_PER_TASK",
                "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(parallel, "available_cpus", lambda: 8)
    parallel.threads.cache_clear()
    parallel._pool.cache_clear()
    yield monkeypatch
    parallel.threads.cache_clear()
    parallel._pool.cache_clear()


def test_thread_count_from_the_environment_the_launcher_or_the_cpus(fresh):
    assert parallel.threads() == 8
    for env, want in (({"PSMPI_THREADS": "3"}, 3),
                      ({"OMPI_COMM_WORLD_LOCAL_SIZE": "4", "OMPI_COMM_WORLD_SIZE": "8"}, 2),
                      ({"OMPI_COMM_WORLD_LOCAL_SIZE": "21", "OMPI_COMM_WORLD_SIZE": "21"}, 1),  # oversubscribed
                      ({"PMI_SIZE": "5"}, 1),  # MPI without a local size: one thread
                      ({"PMIX_SIZE": "5", "SLURM_CPUS_PER_TASK": "4"}, 4),  # srun --cpus-per-task=4
                      ({"SLURM_CPUS_PER_TASK": "4"}, 8),  # not an MPI launch: the CPUs it may use
                      ({"PSMPI_THREADS": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "21"}, 2)):  # the variable wins
        with fresh.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            parallel.threads.cache_clear()
            assert parallel.threads() == want, env
        parallel.threads.cache_clear()


@pytest.mark.parametrize("bad", ["0", "-1", "two", "", "1.5"])
def test_a_bad_thread_count_is_a_config_error(fresh, bad):
    fresh.setenv("PSMPI_THREADS", bad)
    with pytest.raises(ConfigError, match="PSMPI_THREADS"):
        parallel.threads()


def test_a_bad_thread_count_fails_train_with_one_line(fresh, tmp_path):
    from click.testing import CliRunner

    from psmpi.cli import main

    fresh.setenv("PSMPI_THREADS", "0")
    r = CliRunner().invoke(main, ["train", "--dataset", "quad:iid", "--workers", "2", "--iters", "2",
                                  "--out", str(tmp_path / "r.h5"), "--quiet"])
    assert r.exit_code == 2 and "PSMPI_THREADS" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r.h5").exists()


@pytest.mark.parametrize("n,parts", [(10, 3), (3, 8), (1, 1), (7, 7), (100, 1)])
def test_chunks_cover_the_range_in_order_with_sizes_one_apart(n, parts):
    c = parallel.chunks(n, parts)
    assert c[0][0] == 0 and c[-1][1] == n and len(c) == min(parts, n)
    assert all(a[1] == b[0] for a, b in zip(c, c[1:]))
    sizes = [b - a for a, b in c]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_run_all_keeps_item_order_uses_the_pool_and_raises(fresh):
    fresh.setenv("PSMPI_THREADS", "3")
    names = {}

    def f(i):
        names[i] = threading.current_thread().name
        return i * i

    assert parallel.run_all(f, range(5)) == [0, 1, 4, 9, 16]
    assert names[0] == threading.current_thread().name  # the first item here
    assert all(names[i].startswith("psmpi") for i in range(1, 5))  # the others on the pool

    def g(i):
        if i == 2:
            raise KeyError(i)
        return i

    with pytest.raises(KeyError):
        parallel.run_all(g, range(4))
    fresh.setenv("PSMPI_THREADS", "1")
    parallel.threads.cache_clear()
    names.clear()
    assert parallel.run_all(f, range(3)) == [0, 1, 4]
    assert set(names.values()) == {threading.current_thread().name}


def test_run_all_inside_a_pool_thread_runs_there(fresh):
    """A nested run_all on the (one-thread) pool would wait for itself: it runs its items in place."""
    fresh.setenv("PSMPI_THREADS", "2")

    def inner(i):
        me = threading.current_thread().name
        names = parallel.run_all(lambda j: threading.current_thread().name, range(3))
        return me, names, parallel.on_pool_thread()

    (me0, names0, pool0), (me1, names1, pool1) = parallel.run_all(inner, range(2))
    assert not pool0 and names0[0] == me0 and names0[1].startswith("psmpi")  # the caller: shares out
    assert pool1 and me1.startswith("psmpi") and names1 == [me1] * 3  # the pool thread: all in place
    assert not parallel.on_pool_thread()
