"""M3AE at CPU scale with towers trained here: pretrained vs random fusion on image-text retrieval (coco-mini) and on
CIFAR-10 caption classification.

Towers (no CLIP or RoBERTa weights exist here): the vision tower is the lead's hf-mae MAE encoder pretrained on
CIFAR-10 (``runs/cifar10-e10/mae/seed0/pretrain`` of the main checkout: 32 px, 4-px patches, 128 wide, 4 blocks), the
text tower the real all-MiniLM-L6-v2 (384 wide, 6 layers) with its tokenizer. Both towers are frozen (the CPU budget;
the paper fine-tunes them at lr 1e-5): what is trained is M3AE's own part, the projections, modality embeddings,
``--fusion-layers`` co-attention layers of ``--width``, the poolers and the MLM / MIM / ITM heads, with M3AE's three
objectives (MLM 15% whole words, MIM 75% from fusion layer 1, ITM 50% in-batch negatives of another image / class).

- **retrieval**: pre-train on coco-mini's train images (80 photos, 400 captions), then rank coco-mini's val split
  (79 held-apart photos with ``--captions-per-image`` of their captions, default 1: the fusion scores every pair,
  which is the CPU cost) by the ITM score of every (image, caption) pair: image->text R@1 / R@5 (a hit when one of
  the image's captions is in the top k) and text->image R@1 / R@5. Chance with one caption each: R@1 1.3%, R@5 6.3%.
- **cifar10**: pre-train on ``--cifar-train`` CIFAR-10 train images with class-name captions ("a photo of a cat."),
  then classify ``--cifar-test`` CIFAR-10 test images by the best-scoring of the ten class captions (chance: 10%),
  and mask the class word of each test caption: MLM accuracy with the right image vs with shuffled images (whether
  the fusion reads the image at all).
"random fusion" is the same model before pre-training (the towers as they are, everything else initialised as
M3AE does); "pretrained" is after ``--steps`` steps.

    python benchmarks/m3ae_coco.py --steps 100 --seeds 0        # ~25 min on 1 busy CPU core
    python benchmarks/m3ae_coco.py --json benchmarks/results/m3ae_coco.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
DEFAULT_VISION = "/work/main/runs/cifar10-e10/mae/seed0/pretrain"


def build(vision_path: str, width: int, layers: int, seed: int):
    """An M3AEForPreTraining over the frozen MAE encoder and MiniLM, and its processor."""
    import hf_mae  # noqa: F401  (registers the MAE encoder)
    from transformers import AutoModel

    from hf_mae import M3AEForPreTraining, M3AEProcessor
    from hf_mae.modeling.text import MINILM
    from hf_mae.registry import create_config

    vision = AutoModel.from_pretrained(vision_path).eval()
    text = AutoModel.from_pretrained(MINILM, dtype=torch.float32).eval()
    config = create_config(
        "m3ae-tiny", vision_config=vision.config.to_dict(), text_config=text.config.to_dict(),
        tokenizer_name_or_path=MINILM, max_length=40, hidden_size=width, num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64), intermediate_size=4 * width, decoder_hidden_size=128,
        decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=512, mim_layer=1,
    )
    torch.manual_seed(seed)
    model = M3AEForPreTraining(config, vision_model=vision, text_model=text)
    for tower in (model.m3ae.vision_model, model.m3ae.text_model):
        tower.requires_grad_(False)
    return model, M3AEProcessor.from_model_config(model.config)


def load_rows(dataset: str, split: str):
    from hf_mae.training.image_text_data import load_image_text_dataset, open_image

    rows = load_image_text_dataset(dataset, split)
    return [open_image(path) for path in rows["image"]], list(rows["text"]), list(rows["group"])


def pretrain(model, processor, images, texts, groups, steps: int, batch: int, lr: float, seed: int) -> list[dict]:
    """``steps`` AdamW steps (5% warm-up, cosine) on random batches of the rows, M3AE's three objectives."""
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    tokens = processor.tokenize(texts)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.999))
    generator = torch.Generator().manual_seed(seed)
    warmup = max(1, steps // 20)
    model.train()
    for tower in (model.m3ae.vision_model, model.m3ae.text_model):
        tower.eval()  # frozen: no dropout either
    log = []
    for step in range(steps):
        rows = torch.randint(0, len(texts), (batch,), generator=generator)
        part = {key: value[rows] for key, value in tokens.items()}
        length = int(part["attention_mask"].sum(1).max())
        part = {key: value[:, :length] for key, value in part.items()}
        draws = processor.pretraining_inputs(part, generator, negative_groups=[groups[i] for i in rows])
        out = model(pixel_values=pixels[rows], input_ids=part["input_ids"], attention_mask=part["attention_mask"],
                    **draws)
        optimizer.zero_grad()
        out.loss.backward()
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        optimizer.step()
        log.append({"step": step + 1, "loss": out.loss.item(), "mlm": out.mlm_loss.item(), "mim": out.mim_loss.item(),
                    "itm": out.itm_loss.item(), "itm_accuracy": out.itm_accuracy.item()})
    model.eval()
    return log


def retrieval(model, processor, images, texts, groups, captions_per_image: int = 1) -> dict:
    """Image->text and text->image recall@1/5 on the ITM score matrix (unique images x the first
    ``captions_per_image`` captions of each)."""
    kept = [i for i, g in enumerate(groups) if groups[:i].count(g) < captions_per_image]
    images, texts, groups = [images[i] for i in kept], [texts[i] for i in kept], [groups[i] for i in kept]
    order = list(dict.fromkeys(groups))  # unique images, in order
    first = {g: groups.index(g) for g in order}
    pixels = processor([images[first[g]] for g in order], return_tensors="pt")["pixel_values"]
    tokens = processor(text=texts, return_tensors="pt")
    scores = model.score_matrix(pixels, tokens["input_ids"], tokens["attention_mask"])  # (images, texts)
    owner = torch.tensor([order.index(g) for g in groups])  # the image of each caption
    result = {}
    for k in (1, 5):
        top_texts = scores.topk(k, dim=1).indices  # per image
        result[f"i2t_r{k}"] = float(torch.stack([(owner[top_texts[i]] == i).any() for i in range(len(order))])
                                    .float().mean())
        top_images = scores.topk(k, dim=0).indices  # per caption
        result[f"t2i_r{k}"] = float((top_images == owner.unsqueeze(0)).any(0).float().mean())
    return result


def classification(model, processor, images, labels) -> dict:
    from hf_mae.training.image_text_data import CAPTION_TEMPLATE

    classes = sorted(set(labels))
    prompts = [CAPTION_TEMPLATE.format(label=c.replace("_", " ")) for c in classes]
    tokens = processor(text=prompts, return_tensors="pt")
    correct = 0
    for start in range(0, len(images), 250):
        pixels = processor(images[start:start + 250], return_tensors="pt")["pixel_values"]
        scores = model.score_matrix(pixels, tokens["input_ids"], tokens["attention_mask"])
        predicted = scores.argmax(1).tolist()
        correct += sum(classes[p] == label for p, label in zip(predicted, labels[start:start + 250]))
    return {"accuracy": correct / len(images)}


def class_word_mlm(model, processor, images, labels, shuffle: bool) -> float:
    """Share of CIFAR-10 test captions ("a photo of a <class>.") whose class word, masked whole, is predicted right
    (every piece), with each image's own image or with the images shuffled (a derangement)."""
    from hf_mae.training.image_text_data import CAPTION_TEMPLATE

    texts = [CAPTION_TEMPLATE.format(label=c.replace("_", " ")) for c in labels]
    tokens = processor.tokenize(texts)
    ids, words = tokens["input_ids"], tokens["word_ids"]
    target = words == 4  # a / photo / of / a / <class> / .
    masked = ids.masked_fill(target, processor.tokenizer.mask_token_id)
    mlm_labels = ids.masked_fill(~target, -100)
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    if shuffle:
        pixels = pixels[torch.roll(torch.arange(len(images)), 1)]
    right = []
    with torch.no_grad():
        for start in range(0, len(images), 100):
            part = slice(start, start + 100)
            out = model(pixel_values=pixels[part], input_ids=ids[part], attention_mask=tokens["attention_mask"][part],
                        mlm_input_ids=masked[part], mlm_labels=mlm_labels[part])
            hits = (out.mlm_logits.argmax(-1) == mlm_labels[part][target[part]]).tolist()
            counts = target[part].sum(1).tolist()
            at = 0
            for count in counts:
                right.append(all(hits[at:at + count]))
                at += count
    return sum(right) / len(right)


def classification_and_mlm(model, processor, images, labels) -> dict:
    result = classification(model, processor, images, labels)
    result["class_word_mlm_right_images"] = class_word_mlm(model, processor, images, labels, shuffle=False)
    result["class_word_mlm_shuffled_images"] = class_word_mlm(model, processor, images, labels, shuffle=True)
    return result


def spread(values) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vision", default=DEFAULT_VISION, help="the hf-mae image encoder's run folder")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cifar-steps", type=int, default=None, help="default: --steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--fusion-layers", type=int, default=1)
    parser.add_argument("--captions-per-image", type=int, default=1, help="val captions ranked per image (of 5)")
    parser.add_argument("--cifar-test", type=int, default=500, help="CIFAR-10 test images classified (of 1,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tasks", nargs="+", default=["retrieval", "cifar10"], choices=["retrieval", "cifar10"])
    parser.add_argument("--cifar-train", type=int, default=2000, help="CIFAR-10 train images used (of 5,000)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    coco, cifar = SHARED / "coco-mini", SHARED / "cifar10"
    runs = []
    for task in args.tasks:
        if task == "retrieval":
            train, test = load_rows(coco, "train"), load_rows(coco, "val")
            steps = args.steps
        else:
            images, texts, groups = load_rows(cifar, "train")
            pick = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))[: args.cifar_train].tolist()
            train = ([images[i] for i in pick], [texts[i] for i in pick], [groups[i] for i in pick])
            images, texts, groups = load_rows(cifar, "test")
            pick = torch.randperm(len(texts), generator=torch.Generator().manual_seed(1))[: args.cifar_test].tolist()
            test = ([images[i] for i in pick], [texts[i] for i in pick], [groups[i] for i in pick])
            steps = args.cifar_steps or args.steps
        for seed in args.seeds:
            model, processor = build(args.vision, args.width, args.fusion_layers, seed)
            started = time.perf_counter()
            evaluate = (lambda: retrieval(model, processor, *test, args.captions_per_image)) if task == "retrieval" else (
                lambda: classification_and_mlm(model, processor, test[0], test[2]))
            random_fusion = evaluate()
            log = pretrain(model, processor, *train, steps=steps, batch=args.batch_size, lr=args.lr, seed=seed)
            pretrained = evaluate()
            first, last = log[:10], log[-10:]
            run = {"task": task, "seed": seed, "steps": steps, "random_fusion": random_fusion, "pretrained": pretrained,
                   "loss_first10": {k: statistics.mean(r[k] for r in first) for k in ("mlm", "mim", "itm")},
                   "loss_last10": {k: statistics.mean(r[k] for r in last) for k in ("mlm", "mim", "itm", "itm_accuracy")},
                   "seconds": time.perf_counter() - started}
            runs.append(run)
            print(json.dumps(run), flush=True)
    lines = ["| task | metric | random fusion | pretrained fusion |", "|---|---|---|---|"]
    for task in args.tasks:
        chosen = [r for r in runs if r["task"] == task]
        for metric in chosen[0]["pretrained"]:
            lines.append(f"| {task} | {metric} | {spread([r['random_fusion'][metric] for r in chosen])} | "
                         f"{spread([r['pretrained'][metric] for r in chosen])} |")
    table = "\n".join(lines)
    print(table)
    result = {"settings": vars(args), "runs": runs, "table": table}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
