"""Dense retrieval on beir/msmarco-5k: zero-shot and after one short contrastive fine-tune, per start checkpoint.

For every ``--start NAME=FOLDER`` (a SentenceTransformer folder, or any encoder folder transformers' AutoModel
loads, e.g. the encoder a RetroMAE / DupMAE / Starbucks pretraining run exported; default: the un-pretrained
baseline, the real all-MiniLM-L6-v2 folder itself) the script

1. evaluates the start zero-shot (``hf_mae.training.retrieval.evaluate_retrieval``: the 43 judged queries against
   all 5,000 passages, cosine scores, exact search, nDCG@10 / RR@10 (MRR@10) / R@100 by ir_measures, texts
   truncated to ``--eval-max-length`` = 256 tokens, the data README's setting);
2. for every ``--seeds`` seed, fine-tunes it with the same recipe (``contrastive_finetune``:
   sentence-transformers' trainer, MultipleNegativesRankingLoss with in-batch negatives, scale 20, batch 32
   without duplicates, AdamW lr 2e-5, 10% linear warm-up then linear decay, ``--steps`` = 60 steps, float32,
   texts truncated to 128 tokens) on inverse-cloze pseudo-query pairs made from the msmarco-5k corpus alone
   (``pseudo_query_pairs(corpus, seed)``: a random sentence as the query, removed from its passage 90% of the
   time), and evaluates the fine-tuned model as in 1.

The pseudo queries come from the very corpus the test queries search: the fine-tune sees every passage
(judged or not) but never a test query or a judgement, so no label leaks; what it can learn that would not carry
to an unseen corpus is the corpus itself (its vocabulary and topics), i.e. this is unsupervised domain adaptation
on the target corpus (as GPL / ICT-style adaptation in BEIR), not a held-out-corpus result.

Each row goes to ``OUTPUT_DIR/rows/<name>-zeroshot.json`` or ``<name>-seed<S>.json`` (atomically) when it is done;
a rerun with the same ``--output-dir`` skips rows already there (a failed row is retried); ``--report-only``
summarises what is there. The summary (mean and sample standard deviation over seeds), the machine and the
command go to ``OUTPUT_DIR/retrieval_msmarco.json`` and the markdown table to ``OUTPUT_DIR/results.md``.

    python benchmarks/retrieval_msmarco.py --threads 1                   # MiniLM baseline, 2 seeds
    python benchmarks/retrieval_msmarco.py --start minilm=../shared/data/models/all-MiniLM-L6-v2/model \\
        retromae=runs/retromae-msmarco/encoder --output-dir runs/retrieval
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

from hf_mae.files import write_json, write_text  # noqa: E402
from hf_mae.training.retrieval import (MEASURES, contrastive_finetune, evaluate_retrieval, load_beir,  # noqa: E402
                                       pseudo_query_pairs)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
DEFAULT_START = f"minilm={DATA / 'models' / 'all-MiniLM-L6-v2' / 'model'}"


def parse_starts(items) -> dict:
    """``NAME=FOLDER ...`` -> {name: absolute folder}; each folder must hold a model (nothing is downloaded)."""
    starts = {}
    for item in items:
        name, sep, folder = str(item).partition("=")
        if not sep or not name or not folder or "/" in name:
            raise ValueError(f"--start takes NAME=FOLDER items (e.g. minilm=../shared/data/models/all-MiniLM-L6-v2/"
                             f"model), got {item!r}")
        path = Path(folder)
        if not ((path / "config.json").is_file() or (path / "modules.json").is_file()):
            raise ValueError(f"--start {item!r}: {folder!r} is no model folder (no config.json or modules.json)")
        starts[name] = str(path.resolve())
    return starts


def short_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:500]


def run_row(name: str, folder: str, seed, dataset, args) -> dict:
    """One row: zero-shot (``seed`` None) or the fine-tune with ``seed`` then its evaluation."""
    row = {"start": name, "folder": folder, "seed": seed, "kind": "zero-shot" if seed is None else "fine-tuned"}
    began = time.perf_counter()
    try:
        model = folder
        if seed is not None:
            corpus = dataset[0]
            pairs = pseudo_query_pairs([corpus[d] for d in corpus], seed=seed)
            out = Path(args.output_dir) / "models" / f"{name}-seed{seed}"
            began_ft = time.perf_counter()
            model = contrastive_finetune(folder, pairs, out, steps=args.steps, batch_size=args.batch_size,
                                         lr=args.lr, seed=seed, max_length=args.train_max_length,
                                         pooling=args.pooling, progress=False)
            row.update(pairs=len(pairs), finetune_seconds=round(time.perf_counter() - began_ft, 1))
        row["metrics"] = evaluate_retrieval(model, dataset, max_length=args.eval_max_length, pooling=args.pooling,
                                            batch_size=64, progress=False)
        if seed is not None and not args.keep_models:
            shutil.rmtree(Path(args.output_dir) / "models" / f"{name}-seed{seed}", ignore_errors=True)
    except Exception as error:  # the row keeps its error; the next rows still run
        row["error"] = short_error(error)
        row["traceback"] = traceback.format_exc()
    row["seconds"] = round(time.perf_counter() - began, 1)
    return row


def row_path(args, name, seed) -> Path:
    return Path(args.output_dir) / "rows" / (f"{name}-zeroshot.json" if seed is None else f"{name}-seed{seed}.json")


def summarise(rows: list[dict], starts: dict) -> dict:
    """Per start: the zero-shot metrics and the fine-tuned ones' mean and sample std over seeds."""
    summary = {}
    for name in starts:
        entry = {}
        zero = [r for r in rows if r["start"] == name and r["seed"] is None and "metrics" in r]
        if zero:
            entry["zero-shot"] = zero[0]["metrics"]
        tuned = [r for r in rows if r["start"] == name and r["seed"] is not None and "metrics" in r]
        if tuned:
            entry["fine-tuned"] = {
                m: {"mean": statistics.fmean(r["metrics"][m] for r in tuned),
                    "std": statistics.stdev(r["metrics"][m] for r in tuned) if len(tuned) > 1 else None,
                    "per_seed": {str(r["seed"]): r["metrics"][m] for r in tuned}}
                for m in MEASURES}
            entry["seeds"] = sorted(r["seed"] for r in tuned)
        entry["errors"] = {str(r["seed"]): r["error"] for r in rows if r["start"] == name and "error" in r}
        summary[name] = entry
    return summary


def markdown(summary: dict, args) -> str:
    head = "| start | " + " | ".join(f"{m} zero-shot | {m} fine-tuned" for m in MEASURES) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(MEASURES))]
    for name, entry in summary.items():
        cells = []
        for m in MEASURES:
            zero = entry.get("zero-shot", {}).get(m)
            cells.append("–" if zero is None else f"{zero:.3f}")
            tuned = entry.get("fine-tuned", {}).get(m)
            if tuned is None:
                cells.append("–")
            else:
                std = "" if tuned["std"] is None else f" ± {tuned['std']:.3f}"
                cells.append(f"{tuned['mean']:.3f}{std}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, args.seeds))
    lines.append("")
    lines.append(f"msmarco-5k (43 judged queries, 5,000 passages), cosine, exact search, {args.eval_max_length} "
                 f"tokens. Fine-tune: {args.steps} steps x {args.batch_size} inverse-cloze pairs from the corpus, "
                 f"MultipleNegativesRankingLoss, lr {args.lr}, seeds {seeds} (mean ± sample std).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", nargs="+", default=[DEFAULT_START], metavar="NAME=FOLDER",
                        help="start checkpoints (default: the real all-MiniLM-L6-v2, the un-pretrained baseline)")
    parser.add_argument("--dataset", default=str(DATA / "beir" / "msmarco-5k"), help="a BEIR folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=60, help="fine-tuning optimiser steps")
    parser.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch (in-batch negatives)")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--train-max-length", type=int, default=128)
    parser.add_argument("--eval-max-length", type=int, default=256)
    parser.add_argument("--pooling", choices=("mean", "cls"), default=None,
                        help="for plain AutoModel folders (default mean; SentenceTransformer folders keep theirs)")
    parser.add_argument("--no-finetune", action="store_true", help="zero-shot rows only")
    parser.add_argument("--keep-models", action="store_true", help="keep the fine-tuned folders under models/")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--output-dir", default="runs/retrieval_msmarco")
    parser.add_argument("--report-only", action="store_true", help="summarise the rows already there")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    starts = parse_starts(args.start)
    out = Path(args.output_dir)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    dataset = load_beir(args.dataset)
    wanted = [(name, seed) for name in starts for seed in [None, *([] if args.no_finetune else args.seeds)]]
    rows = []
    for name, seed in wanted:
        path = row_path(args, name, seed)
        if path.is_file():
            row = json.loads(path.read_text())
            if "error" not in row or args.report_only:
                rows.append(row)
                continue
        if args.report_only:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name} {'zero-shot' if seed is None else f'seed {seed}'} ...",
              flush=True)
        row = run_row(name, starts[name], seed, dataset, args)
        write_json(path, row)
        rows.append(row)
        print(f"  {row.get('metrics', row.get('error'))} ({row['seconds']} s)", flush=True)
    summary = summarise(rows, starts)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    write_json(out / "retrieval_msmarco.json", {
        "summary": summary, "rows": [{k: v for k, v in r.items() if k != "traceback"} for r in rows],
        "recipe": {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "train_max_length",
                                                 "eval_max_length", "seeds", "pooling")},
        "machine": machine_info(device), "command": " ".join(sys.argv)})
    table = markdown(summary, args)
    write_text(out / "results.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
