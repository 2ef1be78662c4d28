"""
The authors' engine's timing, as the delays simulate.py adds to its ideal schedule
(--engine-timing authors, the simulator's default; ideal adds none and draws nothing).

Their engine (distributed_training.py of MultiWalk at 243deadf and 4e157cf: the same timing in both)
runs each node as processes that hand work to each other through shared memory and find it by
sleep-polls (`while ...: time.sleep(0.01)`). A poll finds its event at a random point of the
sleeping process's period, so every wait for one is uniform in [0, POLL):
- MW: a walk's communication process raises a flag; the node's compute process, idle, finds it at
  its next poll (busy, it takes a waiting walk at once: it scans before it sleeps). After the
  update the walk's communication process finds the flag cleared at its next poll, then sends the
  walk on (a notification and the model over gloo). Per visit: two polls and a hand-off.
- gossip: an active node's send process notifies a passive neighbour and sends its model; the
  passive's receive process finds the notification at its next poll when idle (a request that
  waited behind another is taken at once), its send process finds the request at its next poll
  and sends the reply, and the active's send process finds the reply at its next poll, averages
  and starts its next exchange at once: no pacing, so the polls set the exchange rate. The
  passive's receive process then polls until its send is done before it serves another request,
  so active nodes sharing a passive neighbour queue there. A compute whose last delta no exchange
  has consumed yet polls until one has.
Around every local update their compute process copies the model in and out of shared memory
(VISIT_OVERHEAD for MW; GOSSIP_UPDATE_OVERHEAD for gossip, whose compute also builds its start from
shared model + slot, clones it and writes the delta out); each model hand-off between processes costs
HANDOFF (MW) or EXCHANGE_HANDOFF (gossip: pack, averaging and copies into 65 shared arrays, by three
processes per node that share the cores with the polls) on top of the polls; on a real network the
simulator adds bytes / bandwidth + latency for the transfer itself.

Calibration: their engine run unmodified at 243deadf on this project's 2-core machine by a harness
outside the repository, V = 8 cycle, emulated updates (a sleep + an add over ResNet-20's 272,474
fp32), 25 ms and 100 ms (reports/timing_calibration.json, FIDELITY.md's timing table).
tests/test_engine_timing.py holds the simulator's predictions to the calibration rows within 10%.
The constants describe their engine on this machine at load 5-8, where their ~25 processes per
8-node job share 2 cores: on the authors' many-core GPU hosts the hand-offs are likely shorter.
"""

# seconds, fitted to reports/timing_calibration.json's calibration rows (FIDELITY.md says which row fits which)
POLL = 0.0113                 # one pass of a sleep(0.01) poll loop: the sleep, its overshoot, the loop's checks
HANDOFF = 0.0015              # MW: the walk's model handed from compute to communication process and sent on
VISIT_OVERHEAD = 0.0046       # MW: the copies around one visit's update (queue slot in and out, merge at node 0)
EXCHANGE_HANDOFF = 0.016      # gossip: one of an exchange's three model hand-offs (request, reply, the active's averaging)
GOSSIP_UPDATE_OVERHEAD = 0.016  # gossip: the copies and slot scans around one local update

# what these make of one exchange of an active node whose passive neighbour is idle: three poll
# waits (the passive's pick-up, its reply, the active's return), each POLL / 2 on average, and three
# hand-offs. The MPI engine's default gossip pacing (config gossip_pacing "authors").
AUTHORS_EXCHANGE_CYCLE = 1.5 * POLL + 3 * EXCHANGE_HANDOFF
# what a visit costs in their engine beyond an ideal one's update and transfer: two poll waits
# (POLL / 2 each), the copies and a hand-off. The MPI engine adds it with --mw-visit-delay authors.
AUTHORS_VISIT_DELAY = POLL + VISIT_OVERHEAD + HANDOFF
TIMINGS = ("authors", "ideal")


def simulated_gossip_interval(cfg):
    """The simulator's seconds between an active node's exchange starts. gossip_pacing "interval":
    cfg's gossip_interval. "authors": under the authors' timing their polls set the rate, so 0 (no
    pacing on top); under the ideal timing, pacing at their modelled cycle, as the MPI engine (whose
    default gossip_interval is AUTHORS_EXCHANGE_CYCLE, core/config.py)."""
    if cfg["gossip_pacing"] == "interval":
        return cfg["gossip_interval"]
    return 0.0 if cfg["engine_timing"] == "authors" else round(AUTHORS_EXCHANGE_CYCLE, 6)


def mw_visit_delay(cfg):
    """Seconds the MPI engine's MW adds to every visit (--mw-visit-delay authors); 0 by default."""
    return AUTHORS_VISIT_DELAY if cfg["mw_visit_delay"] == "authors" else 0.0


class EngineTiming:
    """The delays of one simulated run, one random stream per node (seeded, never shared), so a
    seed gives the same schedule. Ideal: every delay is 0 and `later` acts at once, so the ideal
    schedule (its events and their order) is the one without this module."""
    def __init__(self, cfg):
        self.authors, self.seed = cfg["engine_timing"] == "authors", cfg["seed"]
        self.rngs = {}  # node -> its stream, made at the node's first poll (MW at V = 100,000 polls few nodes)

    def poll(self, v):
        """How long a poll of node v's takes to find an event that just happened."""
        if not self.authors:
            return 0.0
        if v not in self.rngs:
            import numpy as np  # here, not above: config.py reads this module's constants before any numpy
            self.rngs[v] = np.random.default_rng([self.seed, 3, v])
        return float(self.rngs[v].uniform(0.0, POLL))

    def visit_overhead(self):
        return VISIT_OVERHEAD if self.authors else 0.0

    def gossip_update_overhead(self):
        return GOSSIP_UPDATE_OVERHEAD if self.authors else 0.0

    def walk_handoff(self):
        return HANDOFF if self.authors else 0.0

    def exchange_handoff(self):
        return EXCHANGE_HANDOFF if self.authors else 0.0

    def later(self, clock, delay, action, *args):
        """action(*args) after `delay` (authors), or now, with no event of its own (ideal)."""
        if self.authors:
            clock.after(delay, action, *args)
        else:
            action(*args)
