"""Starbucks' SRL against sentence-transformers' own ``Matryoshka2dLoss`` (2DMSE), same data and budget, nDCG@10
per (layer, dim) pair on msmarco-5k.

    python benchmarks/starbucks_srl_vs_2dmse.py                      # the recorded run (see --help for the knobs)
    python benchmarks/starbucks_srl_vs_2dmse.py --steps 20 --seeds 0 --max-passages 500   # a smoke run

Both fine-tunes start from the real all-MiniLM-L6-v2 (6 layers, 384-d, mean pooling) and train on the same
(pseudo-query, passage) pairs made from the msmarco-5k corpus alone (``retrieval.pseudo_query_pairs``: msmarco-5k
has judged test queries only), in the same order, for the same steps, batch, lr (AdamW, linear warm-up 10% then
constant) and sequence length:
- **srl**: ``hf_mae.training.starbucks_srl.StarbucksSRLLoss`` over the scaled Starbucks list
  (1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384) (the paper's (2k, 32 * 2^(k-1)) at base size, halved in
  both layers and width), every pair each step, KL weight 1;
- **2dmse**: ``Matryoshka2dLoss(model, MultipleNegativesRankingLoss(model), [384, 256, 128, 64, 32, 16])`` with its
  defaults (one random layer and one random dim per step, the 2DMSE recipe; KL weight 1, temperature 0.3);
- **start**: the un-fine-tuned MiniLM, evaluated the same way.
Each (layer, dim) embedding is ``hidden_states[layer]`` mean-pooled, cut to the first ``dim`` dims, scored by cosine
(``retrieval.evaluate_retrieval(..., layer_dims=...)``). Results go to ``--output`` (JSON) and a markdown table on
stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MINILM = DATA / "models" / "all-MiniLM-L6-v2" / "model"
MSMARCO = DATA / "beir" / "msmarco-5k"
PAIRS = [(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)]


def load_minilm(path=MINILM):
    from sentence_transformers import SentenceTransformer

    # the folder stores fp16 weights: train in fp32
    return SentenceTransformer(str(path), device="cpu", model_kwargs=dict(dtype=torch.float32))


def build_loss(method: str, model):
    from sentence_transformers.sentence_transformer import losses

    if method == "srl":
        from hf_mae.training.starbucks_srl import StarbucksSRLLoss

        return StarbucksSRLLoss(model, PAIRS, kl_weight=1.0)
    if method == "2dmse":
        dims = sorted({dim for _, dim in PAIRS}, reverse=True)
        return losses.Matryoshka2dLoss(model, losses.MultipleNegativesRankingLoss(model), dims)
    raise ValueError(f"method must be 'srl' or '2dmse', got {method!r}")


def finetune(method: str, pairs, *, steps: int, batch_size: int, lr: float, seed: int, max_seq_length: int):
    """A plain loop, identical for both losses: the same batches in the same order, AdamW, 10% linear warm-up."""
    random.seed(seed)  # Matryoshka2dLoss samples its layer and dim with ``random``
    torch.manual_seed(seed)
    model = load_minilm()
    model.max_seq_length = max_seq_length
    loss_fn = build_loss(method, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    model.train()
    losses, start = [], time.time()
    for step in range(steps):
        index = [order[(step * batch_size + i) % len(order)] for i in range(batch_size)]
        queries, passages = [pairs[i][0] for i in index], [pairs[i][1] for i in index]
        features = [model.preprocess(queries), model.preprocess(passages)]
        loss = loss_fn(features, None)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0 or step == steps - 1:
            print(f"  {method} seed {seed} step {step}: loss {losses[-1]:.3f} ({time.time() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    model.eval()
    return model, losses, time.time() - start


def evaluate(model, dataset, max_length: int):
    from hf_mae.training.retrieval import evaluate_retrieval

    model.max_seq_length = max_length  # trained at a shorter length: evaluate passages at max_length tokens

    result = evaluate_retrieval(model, dataset, score="cos", batch_size=64, max_length=max_length,
                                layer_dims=PAIRS, progress=False)
    return {f"{layer},{dim}": values for (layer, dim), values in result.items()}


def table(results: dict, metric: str = "nDCG@10") -> str:
    runs = list(results["runs"])
    head = "| run | " + " | ".join(f"({p[0]}, {p[1]})" for p in PAIRS) + " |"
    lines = [head, "|" + "---|" * (len(PAIRS) + 1)]
    for run in runs:
        scores = results["runs"][run]["metrics"]
        lines.append(f"| {run} | " + " | ".join(f"{scores[f'{l},{d}'][metric]:.3f}" for l, d in PAIRS) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["srl", "2dmse"], choices=["srl", "2dmse"])
    parser.add_argument("--max-seq-length", type=int, default=48, help="tokens per training text")
    parser.add_argument("--eval-max-length", type=int, default=128, help="tokens per passage at evaluation")
    parser.add_argument("--max-passages", type=int, default=None, help="evaluate on a corpus cut to this many "
                        "passages (the judged ones kept): smoke runs only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "starbucks_srl_vs_2dmse.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from hf_mae.training.retrieval import load_beir, pseudo_query_pairs

    corpus, queries, qrels = load_beir(str(MSMARCO))
    if args.max_passages is not None:
        judged = {doc for docs in qrels.values() for doc in docs}
        keep = [doc for doc in corpus if doc in judged][: args.max_passages]
        keep += [doc for doc in corpus if doc not in judged][: max(0, args.max_passages - len(keep))]
        corpus = {doc: corpus[doc] for doc in keep}
    dataset = (corpus, queries, qrels)
    pairs = pseudo_query_pairs(list(corpus.values()), seed=0)
    print(f"{len(pairs)} training pairs from {len(corpus)} passages; {len(qrels)} judged queries", file=sys.stderr)

    results = dict(settings=vars(args), pairs=PAIRS, runs={})
    start = time.time()
    results["runs"]["start"] = dict(metrics=evaluate(load_minilm().eval(), dataset, args.eval_max_length))
    print(f"  start evaluated ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    for seed in args.seeds:
        for method in args.methods:
            model, losses, seconds = finetune(method, pairs, steps=args.steps, batch_size=args.batch_size,
                                              lr=args.lr, seed=seed, max_seq_length=args.max_seq_length)
            metrics = evaluate(model, dataset, args.eval_max_length)
            results["runs"][f"{method} seed {seed}"] = dict(metrics=metrics, train_seconds=seconds,
                                                            first_losses=losses[:5], last_losses=losses[-5:])
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(results, indent=1))
            print(table(results), file=sys.stderr, flush=True)
    print(table(results))
    print(table(results, "RR@10"))
    return results


if __name__ == "__main__":
    main()
