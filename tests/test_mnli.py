"""MultiNLI + OPT on a tiny random OPT, a tokenizer trained on the test's own text, and tiny
MultiNLI files in both standard forms (a saved DatasetDict and the original jsonl files): the
fixtures `tiny`, `tokenizer` and `model` of conftest.py."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import data
import models
import tasks
from tasks import multinli
from data import DataError, partition_indices, subset_test_split
from core import algorithms, config
from core.config import parse_config
from core.events import read_events
import conftest
from conftest import GENRES, write_jsonl

# ----------------------------------------------------------------------------- data

def test_example_text_is_the_papers_format():
    assert multinli.example_text("A cat sat.", "A cat.", 2, "</s>") == \
        "mnli hypothesis: A cat. premise: A cat sat. target: contradiction</s>"


def test_both_forms_give_the_same_tokens(tiny):
    a, b = tiny["task"], multinli.load_mnli(tiny["jsonl"], tiny["model"])
    assert len(a.train_x) == 200 and len(a.test_x) == 80  # the unlabeled rows are skipped in both forms
    for field in ("train_x", "train_y", "test_x", "test_y", "test_label", "test_choice_ids", "test_choice_targets"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.genres == b.genres == GENRES and np.array_equal(a.partition_labels, b.partition_labels)
    assert [GENRES[g] for g in a.partition_labels] == [row[3] for row in tiny["train"]]
    assert a.test_label.tolist() == [row[2] for row in tiny["dev"]] and a.num_classes == 3


def test_tokens_end_with_eos_padding_is_ignored_and_long_rows_are_cut(tiny, tokenizer):
    task = tiny["task"]
    real = task.train_y != multinli.IGNORE
    lengths = real.sum(1)
    assert torch.equal(task.train_x[real], task.train_y[real])
    assert (task.train_x[~real] == tokenizer.pad_token_id).all()
    assert torch.equal(real, torch.arange(real.shape[1]) < lengths[:, None])  # right padding
    assert lengths.max() == 128 == task.train_x.shape[1]  # the long premises hit max_length
    for i in (0, 5):  # a short row keeps its eos; a long one is truncated to 128 tokens
        premise, hypothesis, label, _ = tiny["train"][i]
        full = tokenizer(multinli.example_text(premise, hypothesis, label, tokenizer.eos_token))["input_ids"]
        assert task.train_x[i, :lengths[i]].tolist() == full[:128]
    assert task.train_x[0, lengths[0] - 1] == tokenizer.eos_token_id and len(full) > 128


def test_label_choices_are_the_tokens_of_the_full_text(tiny, tokenizer):
    task = tiny["task"]
    premise, hypothesis, _, _ = tiny["dev"][0]
    for k in range(3):
        text = multinli.example_text(premise, hypothesis, k, "")
        ids, targets = task.test_choice_ids[0, k], task.test_choice_targets[0, k]
        scored = targets != multinli.IGNORE
        last = int(scored.nonzero().max()) + 1
        assert ids[:last].tolist() == tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids[scored]) == " " + multinli.LABEL_WORDS[k]


def test_eval_subset_cuts_every_test_field_alike(tiny):
    task = subset_test_split(tiny["task"], 20, seed=3)
    assert len(task.test_x) == len(task.test_label) == len(task.test_choice_ids) == 20
    keep = [i for i in range(80) if torch.equal(tiny["task"].test_x[i], task.test_x[0])]
    assert tiny["task"].test_label[keep[0]] == task.test_label[0]
    assert torch.equal(tiny["task"].test_choice_ids[keep[0]], task.test_choice_ids[0])


def test_split_is_over_genres(tiny):
    labels = tiny["task"].partition_labels
    shards = partition_indices(labels, 4, "dirichlet", alpha=0.1, seed=0)
    top_share = np.mean([np.bincount(labels[s], minlength=5).max() / len(s) for s in shards])
    assert top_share > 0.5  # alpha 0.1: most of a shard is one genre (5 genres: iid would give ~0.2-0.3)


# ----------------------------------------------------------------------------- loss, evaluation, model

@pytest.mark.slow
def test_padding_does_not_change_the_loss(tiny, model):
    task = tiny["task"]
    i = int((task.train_y != multinli.IGNORE).sum(1).argmin())  # the shortest row: most padding
    length = int((task.train_y[i] != multinli.IGNORE).sum())
    padded = multinli.lm_loss(model, task.train_x[i:i + 1], task.train_y[i:i + 1])
    unpadded = multinli.lm_loss(model, task.train_x[i:i + 1, :length], task.train_y[i:i + 1, :length])
    manual = torch.nn.functional.cross_entropy(model(task.train_x[i:i + 1, :length]).logits[0, :-1],
                                               task.train_x[i, 1:length])
    assert length < task.train_x.shape[1]
    assert torch.allclose(padded, unpadded, atol=1e-5) and torch.allclose(padded, manual, atol=1e-5)
    # a batch averages over its tokens, not over its rows
    batch = multinli.lm_loss(model, task.train_x[:2], task.train_y[:2])
    sums = [multinli.lm_loss(model, task.train_x[j:j + 1], task.train_y[j:j + 1]) * ((task.train_y[j] != -100).sum() - 1)
            for j in range(2)]
    assert torch.allclose(batch, sum(sums) / ((task.train_y[:2] != -100).sum() - 2), atol=1e-5)


@pytest.mark.slow
def test_evaluate_matches_scoring_one_example_at_a_time(tiny, model):
    task = subset_test_split(tiny["task"], 12, seed=0)
    loss, accuracy = multinli.evaluate_mnli(model, task, batch_size=5)
    nll, tokens, correct = 0.0, 0, 0
    for i in range(12):
        length = int((task.test_y[i] != multinli.IGNORE).sum())
        logits = model(task.test_x[i:i + 1, :length]).logits[0, :-1]
        nll += torch.nn.functional.cross_entropy(logits, task.test_x[i, 1:length], reduction="sum").item()
        tokens += length - 1
        scores = []
        for k in range(3):
            ids, targets = task.test_choice_ids[i, k], task.test_choice_targets[i, k]
            positions = (targets != multinli.IGNORE).nonzero().flatten()
            log_probs = model(ids[None, :positions[-1] + 1]).logits[0].log_softmax(-1)
            scores.append(sum(log_probs[p - 1, ids[p]].item() for p in positions))
        correct += int(np.argmax(scores) == task.test_label[i])
    assert loss == pytest.approx(nll / tokens, rel=1e-5)
    assert accuracy == correct / 12


def test_label_accuracy_follows_the_model():
    """A stub model that always favours one label word's first token gets exactly that label's share."""
    choice_ids = torch.tensor([[[5, 6, 10], [5, 6, 11], [5, 6, 12]]] * 4)
    targets = torch.tensor([[[-100, -100, 10], [-100, -100, 11], [-100, -100, 12]]] * 4)

    class Favours11(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, use_cache=False):
            logits = torch.zeros(*input_ids.shape, 20)
            logits[..., 11] = 5.0
            return type("Output", (), {"logits": logits})

    task = multinli.MnliData(train_x=None, train_y=None, test_x=choice_ids[:, 1], test_y=targets[:, 1], num_classes=3,
                         partition_labels=None, test_label=torch.tensor([1, 1, 0, 2]),
                         test_choice_ids=choice_ids, test_choice_targets=targets)
    loss, accuracy = multinli.evaluate_mnli(Favours11(), task, batch_size=3)
    assert accuracy == 0.5 and loss == pytest.approx(-torch.log_softmax(torch.tensor([0.0] * 11 + [5.0] + [0.0] * 8),
                                                                        0)[11].item(), rel=1e-5)


# ----------------------------------------------------------------------------- the authors' evaluation and pad token

def test_authors_style_pads_with_a_new_pad_token(tiny, tokenizer):
    """Their tokenizer adds "[PAD]" (a new id after the vocabulary, inside the model's spare rows);
    the masked style pads with the tokenizer's own <pad>."""
    authors = multinli.load_mnli(tiny["hf"], tiny["model"], style="authors")
    padding = authors.train_y == multinli.IGNORE
    assert padding.any() and (authors.train_x[padding] == len(tokenizer)).all()
    assert authors.train_x[padding][0] != tokenizer.pad_token_id
    assert (tiny["task"].train_x[tiny["task"].train_y == multinli.IGNORE] == tokenizer.pad_token_id).all()
    assert multinli.load_tokenizer(tiny["model"], new_pad=True).convert_ids_to_tokens(len(tokenizer)) == "[PAD]"


def test_a_model_without_room_for_the_new_pad_is_one_line(tiny, tmp_path, tokenizer):
    for name in os.listdir(tiny["model"]):  # the same checkpoint, its config saying no spare rows
        (tmp_path / name).write_bytes(open(os.path.join(tiny["model"], name), "rb").read())
    spec = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(spec, vocab_size=len(tokenizer))))
    multinli.load_tokenizer(str(tmp_path))  # its own <pad> fits
    with pytest.raises(DataError) as error:
        multinli.load_tokenizer(str(tmp_path), new_pad=True)
    assert f"has {len(tokenizer) + 1} tokens with the authors' new [PAD]" in str(error.value)
    assert "--mnli-style masked" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_authors_evaluation_is_batches_of_64_without_the_partial_one(tiny, model):
    """80 test examples: the authors' evaluation is the first 64 in one batch (the padded mean of that
    batch), 'all' evaluates all 80 in batches of 32."""
    task = tiny["task"]
    assert multinli.EVAL_BATCHES == dict(authors=(64, True), all=(32, False))
    loss, accuracy = multinli.evaluate_mnli(model, task, True, 64, True)
    with torch.no_grad():
        by_hand = multinli.lm_loss_with_padding(model, task.test_x[:64], task.test_y[:64]).item()
    first64 = dataclasses.replace(task, **{k: getattr(task, k)[:64] for k in (
        "test_x", "test_y", "test_label", "test_choice_ids", "test_choice_targets")})
    assert loss == pytest.approx(by_hand, rel=1e-5)
    assert accuracy == multinli.evaluate_mnli(model, first64, True, 64, False)[1]
    every = multinli.evaluate_mnli(model, task, True, 32, False)
    assert every[0] != pytest.approx(loss, rel=1e-6)
    assert multinli.eval_batches(80, 64, True) == [slice(0, 64)]
    assert multinli.eval_batches(80, 32, False) == [slice(0, 32), slice(32, 64), slice(64, 96)]
    assert np.isnan(multinli.evaluate_lm_loss(model, task.test_x[:10], task.test_y[:10], True, 64, True))  # no batch


@pytest.mark.slow
def test_mnli_eval_switch_in_make_evaluate(tiny, model):
    """--mnli-eval authors: the train half in a seeded random order (their random_split subset), batches
    of 64 with the partial one dropped; all: the sorted half, batches of 32, every example."""
    cfg = dict(config.config, task="mnli", model_dir=tiny["model"])
    run = dict(task_data=tiny["task"], shards=[np.arange(10)])
    node = algorithms.make_node(cfg, run, 0, torch.device("cpu"))
    authors = algorithms.make_evaluate(cfg, run, node)(model)
    every = algorithms.make_evaluate(dict(cfg, mnli_eval="all"), run, node)(model)
    half = data.evaluation_train_subset(len(tiny["task"].train_x), 0, cfg["seed"])  # 100 examples
    order = half[torch.randperm(len(half), generator=torch.Generator().manual_seed(cfg["seed"]))]
    task = tiny["task"]
    with torch.no_grad():
        first = multinli.lm_loss_with_padding(model, task.train_x[order[:64]], task.train_y[order[:64]]).item()
    assert authors["train_loss"] == pytest.approx(first, rel=1e-5)
    assert every["train_loss"] == pytest.approx(multinli.evaluate_lm_loss(
        model, task.train_x[half], task.train_y[half], True, 32, False), rel=1e-6)
    assert (authors["test_loss"], authors["test_accuracy"]) == multinli.evaluate_mnli(model, task, True, 64, True)


def test_authors_evaluation_needs_one_full_batch(tiny, tmp_path):
    """Fewer examples than one batch of 64 (a small test split, or --eval-samples / --eval-train-samples
    below 64) is one line before training: the authors' evaluation would average over no batch."""
    folder = tmp_path / "mnli"
    folder.mkdir()
    write_jsonl(folder / "multinli_1.0_train.jsonl", tiny["train"], [])
    write_jsonl(folder / "multinli_1.0_dev_matched.jsonl", tiny["dev"][:60], [])
    cfg = parse_config(["--task", "mnli", "--data-dir", str(folder), "--model-dir", tiny["model"]])
    with pytest.raises(DataError) as error:
        tasks.get("mnli").load_data(cfg)
    assert str(error.value).startswith("60 MultiNLI test examples (eval_samples 0, data_dir ")
    assert "fewer than one evaluation batch of 64" in str(error.value) and "\n" not in str(error.value)
    assert len(tasks.get("mnli").load_data(dict(cfg, mnli_eval="all")).test_x) == 60
    cfg = dict(cfg, data_dir=tiny["jsonl"])
    for key, value, what in (("eval_samples", 20, "20 MultiNLI test"), ("eval_train_samples", 63, "63 MultiNLI train")):
        with pytest.raises(DataError, match=what):
            tasks.get("mnli").load_data(dict(cfg, **{key: value}))
    assert len(tasks.get("mnli").load_data(dict(cfg, eval_samples=64)).test_x) == 80  # build_run cuts it


def test_tied_weights_travel_once(tiny, model):
    tied = model.get_output_embeddings().weight
    assert tied is model.get_input_embeddings().weight
    unique = {id(p): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}
    assert models.num_params(model) == sum(unique.values())
    assert models.num_params(model) < sum(p.numel() for p in model.state_dict().values())  # lm_head listed twice there
    flat = models.flatten_params(model)
    copy = multinli.load_model(tiny["model"])
    models.load_flat_params(copy, flat + 1.0)
    assert copy.get_output_embeddings().weight is copy.get_input_embeddings().weight
    assert torch.equal(models.flatten_params(copy), flat + 1.0)


def test_a_fp16_checkpoint_loads_as_fp32(tiny, tmp_path):
    half = multinli.load_model(tiny["model"]).half()
    half.save_pretrained(tmp_path)
    loaded = multinli.load_model(str(tmp_path))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.equal(models.flatten_params(loaded), models.flatten_params(half))


@pytest.mark.parametrize("what", ["empty data dir", "one jsonl file", "bad jsonl", "not utf-8", "no weights",
                                  "no model dir"])
def test_bad_folders_give_one_line(tiny, tmp_path, what):
    data_dir, model_dir = tiny["hf"], tiny["model"]
    if what == "empty data dir":
        data_dir = str(tmp_path)
    elif what == "one jsonl file":
        write_jsonl(tmp_path / "multinli_1.0_train.jsonl", tiny["train"], [])
        data_dir = str(tmp_path)
    elif what == "bad jsonl":
        for name in multinli.JSONL_FILES:
            (tmp_path / name).write_text('{"sentence1": "a", "gold_label": "maybe"}\n')
        data_dir = str(tmp_path)
    elif what == "not utf-8":  # the file and the line are named, not only the codec's complaint
        for name in multinli.JSONL_FILES:
            (tmp_path / name).write_bytes(b'\n{"sentence1": "caf\x86"}\n')
        data_dir = str(tmp_path)
    elif what == "no weights":
        (tmp_path / "config.json").write_text(open(os.path.join(model_dir, "config.json")).read())
        model_dir = str(tmp_path)
    else:
        model_dir = str(tmp_path / "missing")
    with pytest.raises(DataError) as error:
        multinli.load_mnli(data_dir, model_dir)
    assert "\n" not in str(error.value) and (str(tmp_path) in str(error.value))
    if what == "not utf-8":
        assert " line 2 is not a MultiNLI row (UnicodeDecodeError: 'utf-8' codec can't decode byte 0x86" \
            in str(error.value), error.value


def test_transfer_dtype_and_eval_samples_are_checked():
    from core.config import ConfigError, parse_config
    assert parse_config(["--transfer-dtype", "bfloat16"], check_paths=False)["transfer_dtype"] == "bfloat16"
    with pytest.raises(ConfigError, match="transfer_dtype 'float16' is not one of float32, bfloat16"):
        parse_config(["--transfer-dtype", "float16"], check_paths=False)
    with pytest.raises(ConfigError, match="eval_samples must be >= 0"):
        parse_config(["--eval-samples", "-1"], check_paths=False)


# ----------------------------------------------------------------------------- 4 ranks

def run_mnli(args, ranks=4, timeout=240):
    return conftest.run_main(ranks, ["--task", "mnli", *args], timeout=timeout)


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm, data_form, dtype", [("mw", "jsonl", "float32"), ("gossip", "hf", "bfloat16")])
def test_mnli_trains_on_4_ranks(tiny, tmp_path, algorithm, data_form, dtype):
    out = tmp_path / "run"
    result = run_mnli(["--algorithm", algorithm, "--walks", "2", "--graph", "complete", "--model-dir", tiny["model"],
                       "--data-dir", tiny[data_form], "--transfer-dtype", dtype, "--lr", "3e-3", "--batch-size", "8",
                       "--tau", "2", "--warmup-time", "0", "--max-iterations", "60", "--train-time", "120",
                       "--eval-interval", "1000", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    num_params = models.num_params(multinli.load_model(tiny["model"]))
    assert summary["model_bytes"] == dict(float32=4, bfloat16=2)[dtype] * num_params
    assert summary["transfers"] > 0 and summary["bytes_sent"] == summary["transfers"] * summary["model_bytes"]
    events = read_events(str(out))
    losses = [e["loss"] for e in events if e["type"] == "update"]
    evals = [e for e in events if e["type"] == "eval" and e["model"] == "node0"]
    assert summary["iterations"] == len(losses) == 60 and np.isfinite(losses).all()
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.5  # learning the template alone is worth more than that
    assert np.isfinite(summary["final_test_loss"]) and evals[-1]["test_loss"] < evals[0]["test_loss"] - 0.5
    assert 0 <= summary["final_test_accuracy"] <= 1


@pytest.mark.mpi
@pytest.mark.parametrize("what", ["missing model dir", "data dir without MultiNLI"])
def test_bad_input_exits_2_with_one_line(tiny, tmp_path, what):
    model_dir, data_dir = tiny["model"], tiny["hf"]
    if what == "missing model dir":
        model_dir = str(tmp_path / "no-such-model")
    else:
        data_dir = str(tmp_path)
    result = run_mnli(["--model-dir", model_dir, "--data-dir", data_dir, "--walks", "2", "--out", str(tmp_path / "run")], ranks=2)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path) in lines[0], result.stderr
