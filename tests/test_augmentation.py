"""Pre-training augmentations (hf_mae/training/augmentation.py, data.SeededImages): the crop's area share and aspect
ratio stay in each recipe's ranges and span them, flips happen half the time, the same seed gives the same batch
(with or without workers, resumed or not), the registry rows carry each method's recipe, evaluation stays as it is
and --no-augment gives exactly the inputs of before."""

import argparse
import math

import numpy as np
import pytest
import torch
from PIL import Image

import hf_mae
from hf_mae import registry
from hf_mae.training.augmentation import (
    MAE_RECIPE, CropAndFlip, build_augmentation, check_recipe, random_resized_box, sample_seed,
)
from hf_mae.training.data import collate, load_image_dataset, with_model_inputs
from hf_mae.training.pretrain import EpochSampler, build_dataloader, build_parser

SIMMIM = registry.get_method("simmim-tiny").pretrain_augmentation
DMJD = registry.get_method("dmjd-tiny").pretrain_augmentation


def boxes(recipe, width=32, height=32, draws=1000):
    generator = torch.Generator().manual_seed(0)
    found = [random_resized_box(width, height, recipe["crop_scale"], recipe["crop_ratio"], generator) for _ in range(draws)]
    area = np.array([(r - l) * (b - t) / (width * height) for l, t, r, b in found])
    aspect = np.array([(r - l) / (b - t) for l, t, r, b in found])
    inside = all(0 <= l < r <= width + 1e-9 and 0 <= t < b <= height + 1e-9 for l, t, r, b in found)
    return area, aspect, inside


@pytest.mark.parametrize(
    "recipe, shape",
    # a 3:2 image for MAE's wide area range (SimMIM's >= 0.67 areas cannot be tall there: the aspect cannot span)
    [(MAE_RECIPE, (32, 32)), (MAE_RECIPE, (48, 32)), (SIMMIM, (32, 32)), (DMJD, (32, 32))],
    ids=["mae-square", "mae-3:2", "simmim-square", "dmjd-square"],
)
def test_crop_area_and_aspect_stay_in_the_recipe_ranges_and_span_them(recipe, shape):
    area, aspect, inside = boxes(recipe, *shape)
    (s_low, s_high), (r_low, r_high) = recipe["crop_scale"], recipe["crop_ratio"]
    print(f"{shape}: area {area.min():.3f}-{area.max():.3f} (recipe {s_low}-{s_high}), "
          f"aspect {aspect.min():.3f}-{aspect.max():.3f} (recipe {r_low:.3f}-{r_high:.3f})")
    assert inside
    assert s_low - 1e-9 <= area.min() and area.max() <= s_high + 1e-9
    assert r_low - 1e-9 <= aspect.min() and aspect.max() <= r_high + 1e-9
    # spanning: the extremes of 1000 draws come within 5% (area) / 10% (log aspect) of the range's ends; on a 3:2
    # image no box of aspect <= 4/3 covers more than (4/3) / (3/2) = 0.889 of it
    image_aspect = shape[0] / shape[1]
    reachable = min(s_high, r_high / image_aspect if image_aspect > r_high else 1.0)
    assert area.min() <= s_low + 0.05 * (s_high - s_low) and area.max() >= reachable - 0.05 * (s_high - s_low)
    log_span = math.log(r_high / r_low)
    assert math.log(aspect.min() / r_low) <= 0.1 * log_span and math.log(r_high / aspect.max()) <= 0.1 * log_span


def test_flip_happens_half_the_time():
    image = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))  # no mirror symmetry
    whole = CropAndFlip(size=(32, 32), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), resample="bicubic",
                        flip_probability=0.5)
    mirrored = np.asarray(image)[:, ::-1]
    flips = []
    for index in range(1000):
        view = np.asarray(whole(image, torch.Generator().manual_seed(sample_seed(0, 0, index))))
        assert np.array_equal(view, mirrored) or np.array_equal(view, np.asarray(image))
        flips.append(np.array_equal(view, mirrored))
    print(f"flipped {sum(flips)} of 1000")
    assert abs(np.mean(flips) - 0.5) <= 0.05


def test_the_whole_image_crop_without_flip_is_the_evaluation_transform():
    """Evaluation (probe, fine-tuning eval, feature extraction: with_model_inputs without a recipe) feeds the processor
    the image as it is; a crop of the whole image (scale 1, ratio 1, no flip) is exactly that transform."""
    raw = load_image_dataset("digits", "test").select(range(8))
    processor = hf_mae.create_processor("mae-tiny")
    evaluation = collate([with_model_inputs(raw, processor)[i] for i in range(8)])
    expected = processor([image.convert("RGB") for image in raw["image"]], return_tensors="pt")["pixel_values"]
    assert torch.equal(evaluation["pixel_values"], expected)
    identity = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_probability=0.0)
    cropped = with_model_inputs(raw, processor, with_labels=False, training=True, augmentation=identity)
    assert torch.equal(collate(cropped.__getitems__([(3, i) for i in range(8)]))["pixel_values"], expected)


def run_args(**overrides):
    defaults = {a.dest: a.default for a in build_parser()._actions if a.dest != "help"}
    return argparse.Namespace(**{**defaults, "model": "mae-tiny", "dataset": "digits", "output_dir": "unused",
                                 "batch_size": 16, **overrides})


def first_batches(args, count=3, epoch=0):
    processor = hf_mae.create_processor(args.model)
    loader, _ = build_dataloader(args, processor)
    loader.sampler.set_epoch(epoch)
    batches = []
    for batch, _ in zip(loader, range(count)):
        batches.append(batch["pixel_values"])
    return torch.cat(batches)


def test_same_seed_same_batches_with_and_without_workers_and_another_seed_differs():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    reference = first_batches(run_args())
    assert torch.equal(torch.get_rng_state(), state)  # augmenting in the main process leaves the masks' RNG alone
    torch.manual_seed(2)  # the global RNG plays no part
    assert torch.equal(first_batches(run_args()), reference)
    assert torch.equal(first_batches(run_args(num_workers=2)), reference)
    assert not torch.equal(first_batches(run_args(seed=1)), reference)
    assert not torch.equal(first_batches(run_args(), epoch=1), first_batches(run_args(), epoch=0))
    plain = first_batches(run_args(no_augment=True))
    print(f"mean |augmented - plain| = {(reference - plain).abs().mean():.3f}")
    assert (reference - plain).abs().mean() > 0.1  # the recipe changes the pixels


def test_no_augment_gives_exactly_the_inputs_of_before():
    """--no-augment: the data set as before augmentation existed (with_model_inputs(training=True), integer keys
    in the sampler's order)."""
    args = run_args(no_augment=True)
    got = first_batches(args, count=2)
    raw = load_image_dataset("digits", "train")
    before = with_model_inputs(raw, hf_mae.create_processor("mae-tiny"), with_labels=False, training=True)
    order = list(EpochSampler(len(raw), args.seed))[:32]
    assert torch.equal(got, collate([before[i] for i in order])["pixel_values"])


def test_two_view_methods_keep_their_views_seeded_per_sample():
    raw = load_image_dataset("digits", "train").select(range(6))
    processor = hf_mae.create_processor("cropmae-tiny")
    views = with_model_inputs(raw, processor, with_labels=False, training=True, augmentation="views", seed=0)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    both = collate(views.__getitems__([(0, 2), (0, 5)]))
    assert torch.equal(torch.get_rng_state(), state)
    alone = collate(views.__getitems__([(0, 5)]))
    assert set(both) == {"pixel_values", "pixel_values_2"}
    assert torch.equal(both["pixel_values"][1], alone["pixel_values"][0])  # the sample's own seed, not the batch's
    assert torch.equal(both["pixel_values_2"][1], alone["pixel_values_2"][0])
    assert not torch.equal(collate(views.__getitems__([(1, 5)]))["pixel_values"], alone["pixel_values"])


def test_streamed_data_replays_per_epoch():
    stream = load_image_dataset("digits", "train", streaming=True).take(12)
    processor = hf_mae.create_processor("mae-tiny")
    seeded = with_model_inputs(stream, processor, with_labels=False, training=True, augmentation=MAE_RECIPE, seed=0)

    def epoch(number):
        seeded.set_epoch(number)
        return torch.stack([example["pixel_values"] for example in seeded])

    first = epoch(0)
    assert first.shape == (12, 3, 32, 32) and torch.equal(epoch(0), first) and not torch.equal(epoch(1), first)


def test_registry_rows_carry_each_methods_recipe():
    recipes = {name: method.pretrain_augmentation for name, method in registry.METHODS.items()}
    assert recipes["mae"] == {**MAE_RECIPE} == recipes["hpm"] == recipes["colormae"] == recipes["mixedae"]
    assert recipes["simmim"] == {**MAE_RECIPE, "crop_scale": (0.67, 1.0), "resample": "bilinear"}
    assert recipes["dmjd"]["crop_scale"] == (0.5, 1.0)
    assert recipes["lut"] == recipes["cropmae"] == "views"
    others = [m.name for m in registry.METHODS.values() if m.modality != "image"]
    assert len(others) == 15 and all(recipes[name] is None for name in others)  # + the four text methods, M3AE
    assert check_recipe({}) == MAE_RECIPE  # a row that says nothing gets MAE's recipe


def test_bad_recipes_are_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"crop_scale'\] must be a pair \(min, max\) with 0.0 < min <= max <= 1.0, got \(0.5, 1.5\)"):
        check_recipe({"crop_scale": (0.5, 1.5)})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['scale'\]"):
        check_recipe({"scale": (0.2, 1.0)})
    with pytest.raises(ValueError, match=r"resample'\] must be one of \('bicubic', 'bilinear'\), got 'nearest'"):
        check_recipe({"resample": "nearest"})
    with pytest.raises(ValueError, match="pass training=True"):
        with_model_inputs(load_image_dataset("digits", "test"), hf_mae.create_processor("mae-tiny"), augmentation=MAE_RECIPE)
    assert build_augmentation("views", None) is None and build_augmentation(None, None) is None


def test_rows_with_a_bad_recipe_or_lr_rule_are_refused_naming_the_module():
    import types

    mae = registry.METHODS["mae"]
    module = types.ModuleType("hf_mae.modeling.fake_method")
    row = dict(name="fake", paper="p", config_class=mae.config_class, model_classes={"base": mae.model_classes["base"]},
               processor="MAEImageProcessor", presets={})
    plain = registry.method_from_row(dict(row), module)
    assert plain.pretrain_augmentation == MAE_RECIPE and (plain.pretrain_base_lr, plain.pretrain_batch) == (1.5e-4, 4096)
    assert registry.method_from_row(dict(row, modality="video"), module).pretrain_augmentation is None
    assert registry.method_from_row(dict(row, pretrain_augmentation=None), module).pretrain_augmentation is None
    with pytest.raises(ValueError, match=r"fake_method: pretrain_augmentation\['flip_probability'\] must be in \[0, 1\], got 2"):
        registry.method_from_row(dict(row, pretrain_augmentation={"flip_probability": 2}), module)
    with pytest.raises(ValueError, match=r"fake_method: pretrain_batch must be a positive number, got 0"):
        registry.method_from_row(dict(row, pretrain_batch=0), module)
    assert plain.pretrain_betas == (0.9, 0.95)
    with pytest.raises(ValueError, match=r"fake_method: pretrain_betas must be two numbers in \[0, 1\), got \(0.9, 1.0\)"):
        registry.method_from_row(dict(row, pretrain_betas=(0.9, 1.0)), module)
