"""Benchmarks: the MPI engine against its ideal, the simulator's batched path against its sequential one."""
