"""
MultiNLI + OPT (SEMANTICS.md §4), the code of the mnli task (its record: tasks/mnli.py):
causal-LM fine-tuning of a local OPT checkpoint (e.g. facebook/opt-125m saved with
save_pretrained), fully offline.

Every example becomes one text, tokenized by the checkpoint's own tokenizer,
truncated to max_length (128) tokens and right-padded:
    "mnli hypothesis: H premise: P target: LABEL<|endoftext|>"   (style "authors", as their code)
    "mnli hypothesis: H premise: P target: LABEL</s>"              (style "masked": the tokenizer's eos)
- loss: next-token cross-entropy averaged over every position of the batch padded to
  its longest row, padding included (style "authors"), or over every non-padding token
  (style "masked"). Padding gets label IGNORE (-100) either way, which marks it.
- label accuracy: after the prompt "... target:", score each of the three label
  words by its summed log-likelihood and take the argmax.
- non-iid split: over genres (partition_labels are genre ids).
- test split: validation_matched.
- evaluation (EVAL_BATCHES): the authors' batches of 64 with the last partial batch dropped
  (their DataLoader's drop_last), or batches of 32 over every example ("all").
- padding: style "authors" adds a new "[PAD]" token as their tokenizer does (it takes the first
  unused id; OPT's embedding has spare rows), style "masked" pads with the tokenizer's own.

MultiNLI is read from data_dir in either standard form:
  - the HF dataset saved with save_to_disk: a DatasetDict with train and
    validation_matched, columns premise, hypothesis, label (0 entailment,
    1 neutral, 2 contradiction; -1 rows skipped) and genre;
  - the original release: multinli_1.0_train.jsonl and multinli_1.0_dev_matched.jsonl
    (sentence1 = premise, sentence2 = hypothesis, gold_label, genre; '-' rows
    skipped), in data_dir or in data_dir/multinli_1.0.

    python -m tasks.multinli --data-dir /data/mnli --model-dir /models/opt-125m
prints the split sizes, the genres and one tokenized example.
"""
import argparse
import itertools
import json
import os
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from data import DataError, TaskData

LABEL_WORDS = ("entailment", "neutral", "contradiction")  # label ids 0, 1, 2, as in the HF dataset
IGNORE = -100  # the label of a padding position: cross_entropy's ignore_index
JSONL_FILES = ("multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
STYLES = ("authors", "masked")  # text end and loss: the authors' (literal end, padding scored) | eos, padding masked
AUTHORS_END_TEXT = "<|endoftext|>"  # the authors' texts end with this string, whatever the tokenizer's eos
TOKENIZE_CHUNK = 4096  # texts per tokenizer call: bounds the Python lists of 393k tokenized rows
AUTHORS_PAD = "[PAD]"  # the pad token the authors' tokenizer adds (add_special_tokens), a new id
# --mnli-eval: (batch size, drop the last partial batch); the authors' padded-mean loss depends on the batches
EVAL_BATCHES = dict(authors=(64, True), all=(32, False))


@dataclass
class MnliData(TaskData):
    """TaskData with token tensors: train_x / test_x are input ids (n, L), train_y / test_y
    the same ids with IGNORE at padding. Every test_* field has one row per test example."""
    genres: tuple = ()
    test_label: Optional[torch.Tensor] = None          # (n,) 0 entailment, 1 neutral, 2 contradiction
    test_choice_ids: Optional[torch.Tensor] = None     # (n, 3, L') prompt + each label word, right-padded
    test_choice_targets: Optional[torch.Tensor] = None  # (n, 3, L') the label word's ids, IGNORE elsewhere


# ----------------------------------------------------------------------------- reading

def prompt_text(premise, hypothesis):
    return f"mnli hypothesis: {hypothesis} premise: {premise} target:"


def example_text(premise, hypothesis, label, end_text):
    return f"{prompt_text(premise, hypothesis)} {LABEL_WORDS[label]}{end_text}"


def find_jsonl_dir(data_dir):
    for candidate in (data_dir, os.path.join(data_dir, "multinli_1.0")):
        if all(os.path.isfile(os.path.join(candidate, f)) for f in JSONL_FILES):
            return candidate
    return None


def read_jsonl_split(path):
    """Columns (premise, hypothesis, label, genre) of one original-release file."""
    premise, hypothesis, label, genre = [], [], [], []
    with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is named like any other bad row
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
                if row["gold_label"] == "-":  # no annotator majority: unlabeled, as in the HF dataset
                    continue
                label.append(LABEL_WORDS.index(row["gold_label"]))
                premise.append(row["sentence1"])
                hypothesis.append(row["sentence2"])
                genre.append(row["genre"])
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path} line {line_number} is not a MultiNLI row ({type(e).__name__}: {e}); "
                                f"expected JSON with sentence1, sentence2, gold_label in "
                                f"{'/'.join(LABEL_WORDS)}/-, genre".replace("\n", " ")) from None
    return premise, hypothesis, label, genre


def read_saved_split(dataset_dict, split, data_dir):
    if split not in dataset_dict:
        raise DataError(f"the dataset saved in {data_dir} has splits {', '.join(dataset_dict)}; needs train "
                        f"and validation_matched")
    table = dataset_dict[split]
    missing = [c for c in ("premise", "hypothesis", "label", "genre") if c not in table.column_names]
    if missing:
        raise DataError(f"split {split} saved in {data_dir} lacks column(s) {', '.join(missing)}; needs premise, "
                        f"hypothesis, label, genre (the nyu-mll/multi_nli dataset)")
    columns = table.select_columns(["premise", "hypothesis", "label", "genre"]).to_dict()  # arrow -> lists, fast
    rows = [row for row in zip(*columns.values()) if row[2] != -1]  # -1: unlabeled
    if any(row[2] not in (0, 1, 2) for row in rows):
        raise DataError(f"split {split} saved in {data_dir} has labels outside 0, 1, 2 (and -1 for unlabeled)")
    return tuple(list(column) for column in zip(*rows)) if rows else ([], [], [], [])


def read_mnli(data_dir):
    """(train, test) columns (premise, hypothesis, label, genre) from either form of MultiNLI."""
    if not os.path.isdir(data_dir):
        raise DataError(f"data_dir {data_dir} is not a directory; expected MultiNLI saved there")
    if os.path.isfile(os.path.join(data_dir, "dataset_dict.json")):
        import datasets
        try:
            dataset_dict = datasets.load_from_disk(data_dir)
        except Exception as e:  # a damaged arrow folder: one line for the user
            raise DataError(f"cannot load the dataset saved in {data_dir}: {type(e).__name__}: {e}"
                            .replace("\n", " ")) from None
        train, test = (read_saved_split(dataset_dict, s, data_dir) for s in ("train", "validation_matched"))
    else:
        folder = find_jsonl_dir(data_dir)
        if folder is None:
            raise DataError(f"data_dir {data_dir} holds no MultiNLI: expected a DatasetDict saved with "
                            f"save_to_disk (dataset_dict.json, splits train and validation_matched) or "
                            f"{' and '.join(JSONL_FILES)} (in it or in its multinli_1.0 folder)")
        train, test = (read_jsonl_split(os.path.join(folder, f)) for f in JSONL_FILES)
    for name, split in (("train", train), ("validation_matched", test)):
        if not split[0]:
            raise DataError(f"the MultiNLI {name} split in {data_dir} has no labeled rows")
    return train, test


# ----------------------------------------------------------------------------- tokenizing

def check_model_dir(model_dir):
    if not model_dir or not os.path.isdir(model_dir):
        raise DataError(f"model_dir {model_dir!r} is not a directory; task mnli loads a local OPT checkpoint from it")
    if not os.path.isfile(os.path.join(model_dir, "config.json")) or \
            not any(os.path.isfile(os.path.join(model_dir, f)) for f in WEIGHT_FILES):
        raise DataError(f"model_dir {model_dir} holds no saved model; expected config.json and model.safetensors "
                        f"(or pytorch_model.bin), as save_pretrained writes them")


def load_tokenizer(model_dir, new_pad=False):
    """The checkpoint's tokenizer; new_pad: pads with a new AUTHORS_PAD token, as the authors' does."""
    from transformers import AutoConfig, AutoTokenizer
    check_model_dir(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        vocab_size = AutoConfig.from_pretrained(model_dir, local_files_only=True).vocab_size
    except (OSError, ValueError) as e:
        raise DataError(f"cannot load the tokenizer and config from model_dir {model_dir}: {e}"
                        .replace("\n", " ")) from None
    if tokenizer.eos_token is None:
        raise DataError(f"the tokenizer in {model_dir} has no eos (end-of-text) token")
    if new_pad:
        tokenizer.add_special_tokens({"pad_token": AUTHORS_PAD})
    if len(tokenizer) > vocab_size:
        with_pad = f" with the authors' new {AUTHORS_PAD} (--mnli-style masked pads with its own)" if new_pad else ""
        raise DataError(f"the tokenizer in {model_dir} has {len(tokenizer)} tokens{with_pad} but the model only "
                        f"{vocab_size}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # OPT has <pad>; a tokenizer without one pads with eos
    return tokenizer


def tokenize(tokenizer, texts, max_length):
    """(input ids, labels), each (n, L) long with L the longest row (<= max_length); labels are the
    ids with IGNORE at padding. Padding goes on the right (causal attention: real tokens never see
    it) and is done here, not by the tokenizer, which took 4x longer for it."""
    ids = torch.full((len(texts), max_length), tokenizer.pad_token_id, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        rows = tokenizer(texts[start:start + TOKENIZE_CHUNK], truncation=True, max_length=max_length)["input_ids"]
        chunk = slice(start, start + len(rows))
        lengths[chunk] = torch.tensor([len(row) for row in rows])
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64)
        ids[chunk][torch.arange(max_length) < lengths[chunk, None]] = torch.from_numpy(flat)
    width = int(lengths.max())
    ids = ids[:, :width].contiguous()
    return ids, ids.masked_fill(torch.arange(width) >= lengths[:, None], IGNORE)


def label_choices(tokenizer, premises, hypotheses, max_length):
    """(n, 3, L) ids of the prompt followed by each label word, and (n, 3, L) targets: the
    label word's ids, IGNORE elsewhere. A word is tokenized on its own with its leading space,
    as a byte-level BPE (OPT, GPT-2) splits it from the prompt; a prompt too long to leave
    room for the word loses its beginning."""
    words = [tokenizer(" " + word, add_special_tokens=False)["input_ids"] for word in LABEL_WORDS]
    prompts = []
    for start in range(0, len(premises), TOKENIZE_CHUNK):
        prompts += tokenizer([prompt_text(p, h) for p, h in zip(premises[start:start + TOKENIZE_CHUNK],
                                                                hypotheses[start:start + TOKENIZE_CHUNK])],
                             add_special_tokens=True)["input_ids"]
    width = min(max_length, max(len(p) for p in prompts) + max(len(w) for w in words))
    ids = torch.full((len(prompts), len(words), width), tokenizer.pad_token_id, dtype=torch.long)
    targets = torch.full((len(prompts), len(words), width), IGNORE, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        for k, word in enumerate(words):
            row = (prompt + word)[-width:]
            ids[i, k, :len(row)] = torch.tensor(row)
            targets[i, k, len(row) - len(word):len(row)] = torch.tensor(word)
    return ids, targets


def load_mnli(data_dir, model_dir, max_length=128, style="masked"):
    """MultiNLI tokenized for the OPT checkpoint in model_dir, as MnliData. Each text ends with the
    literal string AUTHORS_END_TEXT (style "authors", as their code writes it) or with the
    tokenizer's eos token (style "masked"); style "authors" pads with a new AUTHORS_PAD token."""
    if style not in STYLES:
        raise DataError(f"mnli style {style!r} is not one of {', '.join(STYLES)}")
    train, test = read_mnli(data_dir)
    tokenizer = load_tokenizer(model_dir, new_pad=style == "authors")
    end = AUTHORS_END_TEXT if style == "authors" else tokenizer.eos_token
    train_x, train_y = tokenize(tokenizer, [example_text(*row[:3], end) for row in zip(*train)], max_length)
    test_x, test_y = tokenize(tokenizer, [example_text(*row[:3], end) for row in zip(*test)], max_length)
    choice_ids, choice_targets = label_choices(tokenizer, test[0], test[1], max_length)
    genres = tuple(sorted(set(train[3])))
    return MnliData(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, num_classes=len(LABEL_WORDS),
                    partition_labels=np.array([genres.index(g) for g in train[3]], dtype=np.int64),
                    genres=genres, test_label=torch.tensor(test[2], dtype=torch.long),
                    test_choice_ids=choice_ids, test_choice_targets=choice_targets)


# ----------------------------------------------------------------------------- model, loss, evaluation

def load_model(model_dir):
    """The checkpoint in fp32: every rank loads the same file, so x0 is the pretrained model."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot load the model in {model_dir}: {e}".replace("\n", " ")) from None
    # transformers 5 keeps the checkpoint's dtype (fp16 for facebook/opt-125m); the paper fine-tunes in fp32
    return model.float()


def summed_nll(model, input_ids, labels, include_padding=False):
    """Next-token cross-entropy per sequence: ((batch,) sums, number of scored positions).
    Padding is on the right, so the columns after the batch's last real token are cut: every
    batch is padded to its own longest row, as a tokenizer padding each batch would.
    - include_padding False: only positions whose label is not IGNORE are scored, and no
      attention mask is needed (under causal attention no real token sees the padding).
    - include_padding True, the authors' loss: every position of the cut batch predicts the next
      id, padding ids included, with the attention mask their tokenizer passes."""
    real = labels != IGNORE
    scored = real.any(0).nonzero()
    width = int(scored.max()) + 1 if len(scored) else 1
    if include_padding:
        logits = model(input_ids=input_ids[:, :width], attention_mask=real[:, :width].long(), use_cache=False).logits
        targets = F.pad(input_ids[:, 1:width], (0, 1), value=IGNORE)  # the last position predicts nothing
    else:
        logits = model(input_ids=input_ids[:, :width], use_cache=False).logits
        targets = F.pad(labels[:, 1:width], (0, 1), value=IGNORE)  # position t predicts token t + 1
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return nll.view_as(targets).sum(1), int((targets != IGNORE).sum())


def lm_loss(model, input_ids, labels):
    """Mean next-token cross-entropy over a batch's non-padding tokens (Node.loss_fn, mnli_style masked)."""
    total, tokens = summed_nll(model, input_ids, labels)
    return total.sum() / max(tokens, 1)


def lm_loss_with_padding(model, input_ids, labels):
    """The authors' loss (Node.loss_fn, mnli_style authors): mean next-token cross-entropy over
    every position of the batch padded to its longest row, padding positions included."""
    total, positions = summed_nll(model, input_ids, labels, include_padding=True)
    return total.sum() / max(positions, 1)


def batch_lm_loss(model, input_ids, labels, include_padding):
    """(loss, weight) of one evaluation batch, to be summed: per real token, or (include_padding)
    the authors' batch mean weighted by the batch's number of examples."""
    total, count = summed_nll(model, input_ids, labels, include_padding)
    if include_padding:
        return total.sum().item() / max(count, 1) * len(input_ids), len(input_ids)
    return total.sum().item(), count


def eval_batches(num_examples, batch_size, drop_last):
    """The slices an evaluation goes through, in order; drop_last leaves out a last partial batch."""
    end = num_examples - num_examples % batch_size if drop_last else num_examples
    return [slice(start, start + batch_size) for start in range(0, end, batch_size)]


@torch.no_grad()
def evaluate_lm_loss(model, input_ids, labels, include_padding=False, batch_size=32, drop_last=False):
    """LM loss of `model` on (input_ids, labels) in eval mode, as batch_lm_loss weighs it."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, weight = 0.0, 0
    for batch in eval_batches(len(input_ids), batch_size, drop_last):
        loss, count = batch_lm_loss(model, input_ids[batch].to(device), labels[batch].to(device), include_padding)
        loss_sum, weight = loss_sum + loss, weight + count
    model.train(was_training)
    return loss_sum / weight if weight else float("nan")  # nan: no batch to evaluate


@torch.no_grad()
def evaluate_mnli(model, task, include_padding=False, batch_size=32, drop_last=False):
    """(test LM loss, label accuracy) of `model` on task.test_*, in eval mode, over the examples
    of eval_batches. The loss is per non-padding token, or with include_padding the authors' mean
    over padded batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, weight, correct, examples = 0.0, 0, 0, 0
    for batch in eval_batches(len(task.test_x), batch_size, drop_last):
        loss, count = batch_lm_loss(model, task.test_x[batch].to(device), task.test_y[batch].to(device),
                                    include_padding)
        loss_sum, weight = loss_sum + loss, weight + count
        choices = task.test_choice_ids[batch]
        choice_nll, _ = summed_nll(model, choices.flatten(0, 1).to(device),
                                   task.test_choice_targets[batch].flatten(0, 1).to(device))
        predicted = choice_nll.view(len(choices), len(LABEL_WORDS)).argmin(1).cpu()
        correct += int((predicted == task.test_label[batch]).sum())
        examples += len(choices)
    model.train(was_training)
    return (loss_sum / weight, correct / examples) if examples else (float("nan"), float("nan"))


# ----------------------------------------------------------------------------- CLI

def main(argv=None):
    parser = argparse.ArgumentParser(description="Check a MultiNLI folder and an OPT checkpoint offline.")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--style", default="authors", help=f"one of {', '.join(STYLES)}")
    args = parser.parse_args(argv)
    try:
        task = load_mnli(args.data_dir, args.model_dir, args.max_length, args.style)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    lengths = (task.train_y != IGNORE).sum(1).float()
    print(f"train {len(task.train_x)} examples, validation_matched {len(task.test_x)}; tokens per train example: "
          f"mean {lengths.mean():.1f}, max {int(lengths.max())} "
          f"({int((lengths >= args.max_length).sum())} at the limit of {args.max_length})")
    print("genres:", ", ".join(f"{g} ({int((task.partition_labels == i).sum())})" for i, g in enumerate(task.genres)))
    tokenizer = load_tokenizer(args.model_dir, new_pad=args.style == "authors")
    print("first train example:", repr(tokenizer.decode(task.train_x[0][task.train_y[0] != IGNORE])))


if __name__ == "__main__":
    main()
