"""Runtimes: ``serial`` (one process) and ``mpi`` (rank 0 master, ranks 1..n workers)."""
