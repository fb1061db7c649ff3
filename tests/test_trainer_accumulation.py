"""transformers' Trainer under gradient accumulation: hf-mae's losses are batch means, so Trainer must divide each
micro-batch loss by the accumulation steps. One SGD step over 2 micro-batches of 4 must equal one step over a batch
of 8 (with a forward taking ``**kwargs`` and no ``accepts_loss_kwargs = False``, Trainer skips the division and the
step is twice as long)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from hf_mae.registry import METHODS, create_config


class _LabelledImages(Dataset):
    def __init__(self, config, size=8):
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(size, config.num_channels, config.image_size, config.image_size, generator=generator)
        self.labels = torch.arange(size) % config.num_labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def _one_sgd_step(tmp_path, batch_size: int, accumulation: int) -> dict:
    config = create_config("mae-tiny", num_labels=3)
    torch.manual_seed(0)
    model = METHODS["mae"].model_classes["image-classification"](config)
    args = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch_size}-a{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,  # no clipping: the step length shows the loss scale
        weight_decay=0.0,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    start = {name: value.detach().clone() for name, value in model.named_parameters()}
    Trainer(model=model, args=args, train_dataset=_LabelledImages(config)).train()
    return {name: value.detach() - start[name] for name, value in model.named_parameters()}


def test_every_model_class_tells_trainer_its_losses_are_means():
    classes = [cls for method in METHODS.values() for cls in method.model_classes.values()]
    assert classes and all(cls.accepts_loss_kwargs is False for cls in classes)


def test_gradient_accumulation_takes_the_same_step_as_one_large_batch(tmp_path):
    whole = _one_sgd_step(tmp_path, batch_size=8, accumulation=1)
    accumulated = _one_sgd_step(tmp_path, batch_size=4, accumulation=2)
    length = lambda step: torch.sqrt(sum((delta.double() ** 2).sum() for delta in step.values())).item()  # noqa: E731
    assert length(whole) > 1e-3  # the step moved the weights
    assert abs(length(accumulated) / length(whole) - 1.0) < 1e-4  # not 2.0
    assert max((accumulated[name] - whole[name]).abs().max().item() for name in whole) < 1e-5
