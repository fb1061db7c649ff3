"""MEAP vs plain next-token prediction on synthetic key-value retrieval (multi-query associative recall).

The paper's claim (Zhuang et al., ICML 2025): masking a few input tokens during next-token pre-training makes a
causal LM better at retrieving key information from its context, at no cost in language modelling. This checks it
at CPU scale: one tiny random Llama per (method, seed), identical initialisation, data order, steps and optimiser;
the MEAP run masks ``mask_ratio`` of the input positions of every batch (the same for the batch, seeded by the step,
targets unmasked), the NTP run is the same wrapper with ``mask_ratio=0``.

A sequence is ``<s> k17 v03 k42 v11 ... ? k42 v11 k17 v03 ...``: ``pairs`` distinct keys (of ``keys``) with random
values (of ``values``), a ``?``, then ``queries`` of the keys again, each followed by its value. Retrieval accuracy
is the share of those query values predicted exactly (argmax) on held-out sequences; perplexity is the exp of the
next-token loss over every position of the held-out sequences, unmasked (the context tokens are random, so its floor
is high; both methods face the same floor). The tokenizer is a word-level one built in code with ``tokenizers``; it
has no [MASK], so MEAP's transform adds one and grows the embeddings by a row.

``--task needle`` is the paper's setting instead: a needle-in-a-haystack over Tiny Shakespeare at byte level (the
``meap-tiny`` tokenizer). ``needles`` key-value needles ``<Kd>`` (K one of ``keys`` capital letters, d a digit) are
inserted at random places of a ``haystack``-byte window of the play, then ``?K`` asks for one of them; retrieval
accuracy is the share of asked digits predicted exactly, and perplexity is measured on the haystack bytes of
held-out windows (the last tenth of the file, never trained on), unmasked: real text, where most of MEAP's masks fall.

    python benchmarks/meap_kv_retrieval.py --seeds 0 1 2 --steps 3000
    python benchmarks/meap_kv_retrieval.py --json out.json      # the table and every run as JSON

``tests/test_meap_kv_retrieval.py`` runs a small version of the same comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from hf_mae.modeling.meap import MEAPConfig, MEAPForCausalLM, byte_level_tokenizer


@dataclass
class Task:
    keys: int = 64
    values: int = 64
    pairs: int = 8
    queries: int = 8

    def __post_init__(self):
        if not 1 <= self.queries <= self.pairs <= self.keys:
            raise ValueError(f"need 1 <= queries ({self.queries}) <= pairs ({self.pairs}) <= keys ({self.keys})")

    @property
    def length(self) -> int:
        return 2 + 2 * self.pairs + 2 * self.queries  # <s>, the pairs, ?, the queries with their values

    def answer_positions(self) -> torch.Tensor:
        """Positions of the query values in a sequence."""
        return torch.arange(2 + 2 * self.pairs + 1, self.length, 2)


def word_tokenizer(task: Task) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the task's words (``<pad>``, ``<s>``, ``</s>``, ``?``, keys, values), no [MASK]."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<s>", "</s>", "?"] + [f"k{i:02d}" for i in range(task.keys)] + [
        f"v{i:02d}" for i in range(task.values)]
    core = Tokenizer(models.WordLevel(vocab={word: index for index, word in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def sample_ids(task: Task, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, task.length) token ids of :func:`word_tokenizer`: ``<s>`` 1, ``?`` 3, key i at 4 + i, value j at
    4 + keys + j (what the tokenizer gives for :func:`texts_of` of them)."""
    keys = torch.stack([torch.randperm(task.keys, generator=generator)[: task.pairs] for _ in range(count)])
    values = torch.randint(0, task.values, (count, task.pairs), generator=generator)
    asked = torch.stack([torch.randperm(task.pairs, generator=generator)[: task.queries] for _ in range(count)])
    key_ids, value_ids = keys + 4, values + 4 + task.keys
    context = torch.stack([key_ids, value_ids], -1).reshape(count, -1)
    query = torch.stack([key_ids.gather(1, asked), value_ids.gather(1, asked)], -1).reshape(count, -1)
    return torch.cat([torch.full((count, 1), 1), context, torch.full((count, 1), 3), query], 1)


def texts_of(tokenizer, ids: torch.Tensor) -> list[str]:
    """The sequences as text, e.g. ``"<s> k17 v03 k42 v11 ? k42 v11 k17 v03"``."""
    return [" ".join(tokenizer.convert_ids_to_tokens(row)) for row in ids.tolist()]


SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text" / "tinyshakespeare.txt"


@dataclass
class NeedleTask:
    """Needles in a Tiny Shakespeare haystack, as byte ids of hf-mae's byte-level tokenizer (byte b at 3 + b)."""

    keys: int = 16
    needles: int = 4
    haystack: int = 64
    path: str = str(SHAKESPEARE)

    def __post_init__(self):
        if not 1 <= self.needles <= self.keys <= 26:
            raise ValueError(f"need 1 <= needles ({self.needles}) <= keys ({self.keys}) <= 26 (capital letters)")
        data = torch.tensor(list(Path(self.path).read_bytes()), dtype=torch.long) + 3
        cut = int(len(data) * 0.9)
        self.train_text, self.test_text = data[:cut], data[cut:]  # the last tenth is held out
        self.values = 10  # digits

    @property
    def length(self) -> int:
        return 1 + self.haystack + 4 * self.needles + 3  # <s>, haystack + needles, ?K d

    def answer_positions(self) -> torch.Tensor:
        return torch.tensor([self.length - 1])


def byte_id(char: str) -> int:
    return 3 + ord(char)


def sample_needles(task: NeedleTask, count: int, generator: torch.Generator, held_out: bool = False):
    """(ids (count, length), haystack mask (count, length): True on the play's bytes)."""
    text = task.test_text if held_out else task.train_text
    starts = torch.randint(0, len(text) - task.haystack, (count,), generator=generator)
    rows, hay = [], []
    for start in starts.tolist():
        filler = text[start: start + task.haystack].tolist()
        keys = torch.randperm(task.keys, generator=generator)[: task.needles].tolist()
        digits = torch.randint(0, 10, (task.needles,), generator=generator).tolist()
        places = sorted(torch.randint(0, task.haystack + 1, (task.needles,), generator=generator).tolist())
        sequence, is_hay, previous = [1], [False], 0
        for place, key, digit in zip(places, keys, digits):
            sequence += filler[previous:place] + [byte_id("<"), byte_id(chr(65 + key)), byte_id(str(digit)),
                                                  byte_id(">")]
            is_hay += [True] * (place - previous) + [False] * 4
            previous = place
        sequence += filler[previous:]
        is_hay += [True] * (task.haystack - previous)
        asked = int(torch.randint(0, task.needles, (1,), generator=generator))
        sequence += [byte_id("?"), byte_id(chr(65 + keys[asked])), byte_id(str(digits[asked]))]
        is_hay += [False] * 3
        rows.append(sequence)
        hay.append(is_hay)
    return torch.tensor(rows), torch.tensor(hay)


def build_model(task: Task, tokenizer, seed: int, mask_ratio: float, hidden: int, layers: int, heads: int):
    vocab = len(tokenizer)  # before [MASK]: the transform adds it and grows the embeddings by one row
    lm_config = dict(model_type="llama", vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                     num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                     max_position_embeddings=max(64, task.length), bos_token_id=1, eos_token_id=2, pad_token_id=0,
                     tie_word_embeddings=False)
    config = MEAPConfig(lm_config=lm_config, lm_seed=seed, mask_ratio=mask_ratio, mask_seed=1000 * seed)
    return MEAPForCausalLM(config, tokenizer=tokenizer)


@torch.no_grad()
def evaluate(model, task, ids: torch.Tensor, scored: torch.Tensor | None = None, batch_size: int = 500) -> dict:
    """Retrieval accuracy at the task's answer positions; perplexity over the ``scored`` (count, length) targets
    (every position after the first when None), inputs unmasked."""
    model.eval()
    answers = task.answer_positions()
    scored = torch.ones_like(ids, dtype=torch.bool) if scored is None else scored
    correct = total = 0
    loss_sum = tokens = 0.0
    for start in range(0, len(ids), batch_size):
        chunk = ids[start: start + batch_size]
        out = model(input_ids=chunk)
        predicted = out.logits[:, answers - 1].argmax(-1)
        correct += (predicted == chunk[:, answers]).sum().item()
        total += predicted.numel()
        losses = torch.nn.functional.cross_entropy(out.logits[:, :-1].transpose(1, 2), chunk[:, 1:], reduction="none")
        keep = scored[start: start + batch_size, 1:]
        loss_sum += losses[keep].sum().item()
        tokens += keep.sum().item()
    model.train()
    return {"accuracy": correct / total, "perplexity": math.exp(loss_sum / tokens)}


def train_one(task: Task, method: str, seed: int, *, steps: int, batch_size: int, lr: float, mask_ratio: float,
              hidden: int, layers: int, heads: int, eval_size: int, warmup: int = 50) -> dict:
    """Trains one tiny Llama with ``method`` ("meap" or "ntp") and returns its held-out figures."""
    needle = isinstance(task, NeedleTask)
    tokenizer = byte_level_tokenizer() if needle else word_tokenizer(task)
    ratio = mask_ratio if method == "meap" else 0.0
    model = build_model(task, tokenizer, seed, ratio, hidden, layers, heads).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    data = torch.Generator().manual_seed(10_000 + seed)  # the same batches for both methods
    start = time.perf_counter()
    for step in range(steps):
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))  # warmup + cosine
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        ids = sample_needles(task, batch_size, data)[0] if needle else sample_ids(task, batch_size, data)
        loss = model(input_ids=ids).loss  # MEAP masks (training mode); NTP (ratio 0) is the plain LM
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.after_optimizer_step(step + 1)
    test_data = torch.Generator().manual_seed(999_999)
    if needle:
        held_out, hay = sample_needles(task, eval_size, test_data, held_out=True)
        result = evaluate(model, task, held_out, scored=hay)
    else:
        result = evaluate(model, task, sample_ids(task, eval_size, test_data))
    result.update(method=method, seed=seed, steps=steps, seconds=time.perf_counter() - start)
    return result


def compare(task: Task, seeds, **settings) -> list[dict]:
    return [train_one(task, method, seed, **settings) for seed in seeds for method in ("ntp", "meap")]


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def describe(task) -> str:
    if isinstance(task, NeedleTask):
        return (f"Needle in a haystack ({task.needles} needles of {task.keys} keys x 10 digits in {task.haystack} bytes "
                "of Tiny Shakespeare, byte level; perplexity on the held-out haystack bytes")
    return (f"Key-value retrieval ({task.pairs} pairs of {task.keys} keys x {task.values} values, {task.queries} "
            "queries; perplexity on every held-out position")


def table(runs: list[dict], task, settings: dict) -> str:
    lines = [
        f"{describe(task)}; {settings['steps']} steps x batch {settings['batch_size']}, tiny Llama {settings['layers']} x "
        f"{settings['hidden']}-d, MEAP mask_ratio {settings['mask_ratio']}; held-out {settings['eval_size']} "
        f"sequences; chance {1 / task.values:.3f})",
        "",
        "| method | seeds | retrieval accuracy | perplexity (unmasked held-out) | per seed (acc / ppl) |",
        "|---|---|---|---|---|",
    ]
    for method in ("ntp", "meap"):
        rows = [run for run in runs if run["method"] == method]
        per_seed = ", ".join(f"{run['seed']}: {run['accuracy']:.3f} / {run['perplexity']:.2f}" for run in rows)
        lines.append(f"| {method.upper()} | {len(rows)} | {spread([r['accuracy'] for r in rows])} | "
                     f"{spread([r['perplexity'] for r in rows])} | {per_seed} |")
    gaps = [m["accuracy"] - n["accuracy"] for n, m in zip(runs[0::2], runs[1::2])]
    lines += ["", f"MEAP - NTP accuracy per seed: {', '.join(f'{gap:+.3f}' for gap in gaps)}"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--mask-ratio", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--eval-size", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=64)
    parser.add_argument("--values", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--task", choices=("kv", "needle"), default="kv")
    parser.add_argument("--needles", type=int, default=4)
    parser.add_argument("--haystack", type=int, default=64)
    parser.add_argument("--json", default=None, help="write the table and every run here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.task == "needle":
        task = NeedleTask(keys=min(args.keys, 26), needles=args.needles, haystack=args.haystack)
    else:
        task = Task(args.keys, args.values, args.pairs, args.queries)
    settings = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, mask_ratio=args.mask_ratio,
                    hidden=args.hidden, layers=args.layers, heads=args.heads, eval_size=args.eval_size)
    runs = []
    for seed in args.seeds:
        for method in ("ntp", "meap"):
            runs.append(train_one(task, method, seed, **settings))
            print(json.dumps(runs[-1]), flush=True)
    text = table(runs, task, settings)
    print(text)
    described = {k: v for k, v in vars(task).items() if not isinstance(v, torch.Tensor)}
    report = {"task": described, "settings": settings, "runs": runs, "table": text}
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(report, stream, indent=2)
    return report


if __name__ == "__main__":
    main()
