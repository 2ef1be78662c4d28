"""What both transports share: the configuration, the learning rules, the event log and counters,
a run's set-up (graph, data, partition), its folder and its records."""
