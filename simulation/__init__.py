"""What simulate.py uses beyond the protocols: batched local updates."""
