"""The MPI machinery beside the worker loops of distributed_training.py: a rank's context (rank.py),
how its threads sleep and wake (waker.py), what travels and every MPI tag (wire.py), progress counters
(progress.py), periodic evaluation (evaluator.py), cores, threads and devices (cores.py), agreement
before work (agreement.py), checkpoints (checkpoint.py), faults and signals (faults.py), the stall
supervisor (supervisor.py)."""
