"""The MPI machinery beside the worker loops of distributed_training.py: agreement before work,
checkpoints, faults and signals, the stall supervisor."""
