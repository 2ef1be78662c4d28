"""What rank 0 prints before training: the per-node class table up to 8 nodes, one summary line beyond."""
from core import config
from core import build_run


def plan_lines(num_nodes):
    cfg = config.parse_config(["--walks", "1"])
    return build_run.plan_text(cfg, build_run.build_run(cfg, num_nodes)).splitlines()


def test_plan_shows_the_class_table_up_to_eight_nodes():
    lines = plan_lines(8)
    assert lines[1] == "per-node shard classes:" and len(lines) == 2 + 1 + 8  # header row, then a row per node


def test_plan_summarises_the_classes_beyond_eight_nodes():
    lines = plan_lines(20)
    assert len(lines) == 2
    assert lines[1].startswith("shards: 20 nodes x ") and "classes held per node" in lines[1]
    assert lines[1].endswith("the table: python data.py --task digits --nodes 20 --partition dirichlet --alpha 1.0 --seed 0")
