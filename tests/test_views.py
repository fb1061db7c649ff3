"""The two-view processor (LUT, CropMAE): plain calls equal MAEImageProcessor, views are random resized crops whose
geometry is checked on a coordinate-ramp image, the local view lies inside the global one, bad arguments raise, and
the data pipeline carries both views."""

import numpy as np
import pytest
import torch

from hf_mae.processors.image_processing_mae import MAEImageProcessor
from hf_mae.processors.image_processing_views import TwoViewImageProcessor, random_resized_box
from hf_mae.training.data import collate, load_image_dataset, with_model_inputs

SIZE = {"height": 32, "width": 32}
NO_NORM = dict(do_normalize=False, resample=2)  # bilinear and [0, 1] values: a linear ramp stays linear


def ramp(width=96, height=64):
    """An RGB image whose red channel is x / (width - 1) and green channel y / (height - 1), in 0..255."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return np.stack([x, y, np.zeros_like(x)], -1).round().astype(np.uint8)


def extent(view):
    """(x_min, x_max, y_min, y_max) in [0, 1] image coordinates seen by a (3, H, W) view of ``ramp()``, from the
    inner pixels (the outermost ones blend with their neighbours)."""
    red, green = view[0, 1:-1, 1:-1], view[1, 1:-1, 1:-1]
    return red.min().item(), red.max().item(), green.min().item(), green.max().item()


def test_a_plain_call_is_the_mae_processor():
    images = [np.random.default_rng(i).integers(0, 255, (8, 8, 3), dtype=np.uint8) for i in range(3)]
    plain = TwoViewImageProcessor(size=SIZE)(images, return_tensors="pt")
    assert list(plain) == ["pixel_values"]
    assert torch.equal(plain["pixel_values"], MAEImageProcessor(size=SIZE)(images, return_tensors="pt")["pixel_values"])


def test_random_resized_boxes_respect_scale_and_ratio():
    torch.manual_seed(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_box(96, 64, (0.2, 0.6), (3 / 4, 4 / 3))
        w, h = right - left, bottom - top
        assert 0 <= left and 0 <= top and right <= 96 + 1e-9 and bottom <= 64 + 1e-9
        assert 0.2 - 1e-9 <= w * h / (96 * 64) <= 0.6 + 1e-9 and 3 / 4 - 1e-9 <= w / h <= 4 / 3 + 1e-9
    # an impossible request (a share of 1 at ratio 4:1 inside a 3:2 image) falls back to the largest centred box
    assert random_resized_box(96, 64, (1.0, 1.0), (4.0, 4.0)) == pytest.approx((0.0, 20.0, 96.0, 44.0))


def test_independent_views_are_different_crops_seeded_by_torch():
    processor = TwoViewImageProcessor(size=SIZE, view_mode="independent", crop_scale=[0.2, 0.5], **NO_NORM)
    torch.manual_seed(0)
    out = processor([ramp()] * 4, return_tensors="pt", return_views=True)
    assert set(out) == {"pixel_values", "pixel_values_2"} and out["pixel_values_2"].shape == (4, 3, 32, 32)
    assert not torch.allclose(out["pixel_values"], out["pixel_values_2"])
    torch.manual_seed(0)
    again = processor([ramp()] * 4, return_tensors="pt", return_views=True)
    assert torch.equal(again["pixel_values"], out["pixel_values"]) and torch.equal(again["pixel_values_2"], out["pixel_values_2"])
    for view in torch.cat([out["pixel_values"], out["pixel_values_2"]]):
        x0, x1, y0, y1 = extent(view)
        share = (x1 - x0) * (y1 - y0) / (30 / 32) ** 2  # the inner 30 of 32 pixels span 30/32 of the crop
        assert 0.2 - 0.03 <= share <= 0.5 + 0.03, share


def test_global_to_local_views_nest_and_flip_on_their_own():
    processor = TwoViewImageProcessor(size=SIZE, view_mode="global_to_local", crop_scale=[0.3, 1.0],
                                      local_crop_scale=[0.3, 0.6], flip_probability=0.5, **NO_NORM)
    torch.manual_seed(1)
    out = processor([ramp()] * 16, return_tensors="pt", return_views=True)
    flips = {"local": 0, "global": 0, "both": 0}
    for local, global_ in zip(out["pixel_values"], out["pixel_values_2"]):
        lx0, lx1, ly0, ly1 = extent(local)
        gx0, gx1, gy0, gy1 = extent(global_)
        tolerance = 1.5 / 32  # one output pixel of the global view
        assert gx0 - tolerance <= lx0 and lx1 <= gx1 + tolerance and gy0 - tolerance <= ly0 and ly1 <= gy1 + tolerance
        share = (lx1 - lx0) * (ly1 - ly0) / ((gx1 - gx0) * (gy1 - gy0))
        assert 0.3 - 0.05 <= share <= 0.6 + 0.05, share
        # a flipped view runs right-to-left; each view is flipped on its own (as CropMAE's GlobalToLocal)
        local_flipped, global_flipped = (bool(v[0, 16, 0] > v[0, 16, -1]) for v in (local, global_))
        flips["local"] += local_flipped
        flips["global"] += global_flipped
        flips["both"] += local_flipped and global_flipped
    assert 3 <= flips["local"] <= 13 and 3 <= flips["global"] <= 13  # p = 0.5 over 16 images
    assert flips["both"] < min(flips["local"], flips["global"])  # not always together


def test_bad_view_arguments_raise_clear_errors(tmp_path):
    processor = TwoViewImageProcessor(size=SIZE)
    image = [ramp()]
    with pytest.raises(ValueError, match="view_mode.*'sideways'"):
        processor(image, return_views=True, view_mode="sideways")
    with pytest.raises(ValueError, match="crop_scale"):
        processor(image, return_views=True, crop_scale=[0.8, 0.2])
    with pytest.raises(ValueError, match="flip_probability"):
        processor(image, return_views=True, flip_probability=2.0)


def test_view_settings_round_trip_and_the_pipeline_carries_both_views(tmp_path):
    processor = TwoViewImageProcessor(size=SIZE, view_mode="global_to_local", local_crop_scale=[0.4, 0.5])
    processor.save_pretrained(tmp_path)
    loaded = TwoViewImageProcessor.from_pretrained(tmp_path)
    assert (loaded.view_mode, loaded.local_crop_scale) == ("global_to_local", [0.4, 0.5])

    dataset = load_image_dataset("digits", "test")
    with_views = with_model_inputs(dataset, loaded, with_labels=False, training=True)
    batch = collate([with_views[i] for i in range(6)])
    assert batch["pixel_values"].shape == batch["pixel_values_2"].shape == (6, 3, 32, 32)
    plain = collate([with_model_inputs(dataset, loaded, with_labels=False)[i] for i in range(6)])
    assert list(plain) == ["pixel_values"]
