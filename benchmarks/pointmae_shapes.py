"""Point-MAE (or any point-cloud preset, e.g. I2P-MAE) on procedural shapes or ModelNet10 voxel clouds: pretrain,
then the linear-SVM protocol of Point-BERT / Point-MAE on frozen features (max + mean pooled encoder tokens, no
masking) against the same encoder at random init.

    python benchmarks/pointmae_shapes.py --dataset shapes --steps 300 --threads 2
    python benchmarks/pointmae_shapes.py --dataset modelnet10 --steps 3000 --max-clouds 4000 --augment
    python benchmarks/pointmae_shapes.py --dataset modelnet10 --preset i2pmae-tiny --steps 1500 --max-clouds 4000 --augment

Prints a table: the held-out pre-training loss before/after (Point-MAE: Chamfer-L2; I2P-MAE: Chamfer-L2 + 2-D
feature MSE), and linear-SVM test accuracy (random init vs pretrained).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from tqdm import tqdm

import hf_mae
from hf_mae.training.shapes import MODELNET10_CLASSES, SHAPE_CLASSES, make_shapes, modelnet10_points

MODELNET10 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "modelnet10" / "modelnet10.npz"


def load(dataset: str, processor, num_per_class: int, max_clouds: int):
    """(train, train_labels, test, test_labels): processed clouds (n, num_points, 3) and labels."""
    num_points = processor.num_points
    if dataset == "shapes":
        (train, y_train), (test, y_test) = make_shapes(num_per_class, num_points, seed=0), make_shapes(
            max(num_per_class // 2, 1), num_points, seed=1)  # fmt: skip
    else:
        train, y_train = modelnet10_points(MODELNET10, "train", num_points, seed=0)
        test, y_test = modelnet10_points(MODELNET10, "test", num_points, seed=0)
        pick = np.random.default_rng(0)
        train_index = np.sort(pick.permutation(len(train))[:max_clouds])
        test_index = np.sort(pick.permutation(len(test))[: max_clouds // 2])
        train, y_train, test, y_test = train[train_index], y_train[train_index], test[test_index], y_test[test_index]
    process = lambda clouds: processor(list(clouds))["point_values"]  # noqa: E731
    return process(train), torch.as_tensor(y_train), process(test), torch.as_tensor(y_test)


def features(model, clouds, batch_size=64) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(clouds), batch_size):
            tokens = model.base_model(clouds[start : start + batch_size], mask_ratio=0.0).last_hidden_state
            out.append(torch.cat([tokens.max(1).values, tokens.mean(1)], dim=-1))
    return torch.cat(out).numpy()


def svm_accuracy(model, train, y_train, test, y_test) -> float:
    train_features, test_features = features(model, train), features(model, test)
    scaler = StandardScaler().fit(train_features)
    svm = LinearSVC(C=0.05, max_iter=20000).fit(scaler.transform(train_features), y_train.numpy())
    return float(svm.score(scaler.transform(test_features), y_test.numpy()))


def held_out_loss(model, clouds, noise) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(clouds, noise=noise).loss)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("shapes", "modelnet10"), default="shapes")
    parser.add_argument("--preset", default="pointmae-tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-per-class", type=int, default=48, help="shapes: training clouds per class")
    parser.add_argument("--max-clouds", type=int, default=1000, help="modelnet10: training clouds used (test: half)")
    parser.add_argument("--augment", action="store_true", help="pretrain with the processor's scale-and-translate")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    processor = hf_mae.create_processor(args.preset)
    start = time.time()
    train, y_train, test, y_test = load(args.dataset, processor, args.num_per_class, args.max_clouds)
    classes = SHAPE_CLASSES if args.dataset == "shapes" else MODELNET10_CLASSES
    print(f"{args.dataset}: {len(train)} train / {len(test)} test clouds of {train.shape[1]} points, "
          f"{len(classes)} classes ({time.time() - start:.1f} s)")  # fmt: skip

    model = hf_mae.create_model(args.preset)
    random_init = hf_mae.create_model(args.preset)
    random_init.load_state_dict(model.state_dict())
    noise = torch.rand(len(test), model.config.num_groups, generator=torch.Generator().manual_seed(0))
    loss_before = held_out_loss(model, test, noise)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=max(args.steps, 1), pct_start=0.1)
    generator = torch.Generator().manual_seed(0)
    raw = train
    start = time.time()
    bar = tqdm(range(args.steps), desc="pretrain", dynamic_ncols=True)
    for step in bar:
        model.train()
        index = torch.randint(0, len(raw), (args.batch_size,), generator=generator)
        batch = raw[index]
        if args.augment:  # the processor's training-time scale-and-translate on already-normalised clouds
            batch = processor(list(batch.numpy()), augment=True)["point_values"]
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    seconds = time.time() - start
    loss_after = held_out_loss(model, test, noise)

    random_accuracy = svm_accuracy(random_init, train, y_train, test, y_test)
    pretrained_accuracy = svm_accuracy(model, train, y_train, test, y_test)
    print()
    print("| dataset | preset | steps | held-out loss (init -> trained) | linear SVM, random init | "
          "linear SVM, pretrained | chance | pretrain time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.dataset} | {args.preset} | {args.steps} | {loss_before:.4f} -> {loss_after:.4f} | "
          f"{random_accuracy:.3f} | {pretrained_accuracy:.3f} | {1 / len(classes):.3f} | "
          f"{seconds:.0f} s on {args.threads} thread(s) |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
