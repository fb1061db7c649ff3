"""CrossVideoMAE: the contrastive losses by hand, the two views / sampled frames / total loss against the definition
(reconstruction equal to VideoMAE's on each view), within-batch video->frame retrieval rising well above chance on
synthetic moving-square clips, frame encoders by config dict, folder and instance, and pre-training from video files.
The Auto and remote-code round trips run in the shared video suite (tests/test_video_models.py -k crossvideomae)."""

import math

import numpy as np
import pytest
import torch
from conftest import run_pretrain
from transformers import AutoModelForPreTraining, ViTConfig, ViTModel

import hf_mae
from hf_mae.modeling.crossvideomae import CrossVideoMAEForPreTraining, roll_tube_mask
from hf_mae.modeling.losses import info_nce, nt_xent
from hf_mae.modeling.videomae import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, VideoMAEForPreTraining

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, decoder_hidden_size=32,
             decoder_num_hidden_layers=1, decoder_num_attention_heads=4, decoder_intermediate_size=64,
             projection_dim=32)  # fmt: skip


def test_contrastive_losses_by_hand():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    tau = 0.5
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    sim = an @ bn.T / tau
    rows = [-math.log(sim[i].exp()[i] / sim[i].exp().sum()) for i in range(4)]
    cols = [-math.log(sim[:, i].exp()[i] / sim[:, i].exp().sum()) for i in range(4)]
    loss, accuracy = info_nce(a, b, tau)
    torch.testing.assert_close(loss, torch.tensor((sum(rows) + sum(cols)) / 8), rtol=1e-5, atol=0)
    assert accuracy.item() == (sim.argmax(1) == torch.arange(4)).float().mean().item()
    assert info_nce(a, a, tau)[1].item() == 1.0  # a copy is always retrieved
    # NT-Xent: 8 embeddings, positives i <-> i + 4, self-similarity left out of the denominator
    z = torch.cat([an, bn])
    sim = z @ z.T / tau
    terms = []
    for i in range(8):
        others = [j for j in range(8) if j != i]
        terms.append(-math.log(sim[i, (i + 4) % 8].exp() / sim[i, others].exp().sum()))
    loss, accuracy = nt_xent(a, b, tau)
    torch.testing.assert_close(loss, torch.tensor(sum(terms) / 8), rtol=1e-5, atol=0)
    assert nt_xent(a, a, tau)[1].item() == 1.0


def test_views_frames_and_loss_follow_the_definition():
    model = hf_mae.create_model("crossvideomae-tiny", intra_weight=0.5, cross_weight=2.0, **SMALL).eval()
    clips, noise = torch.randn(3, 8, 3, 32, 32), torch.rand(3, 16)
    out = model(clips, noise=noise)
    # second view: the first tube mask rolled by 8 of the 16 spatial positions, in every time slice
    slices = out.mask_2.reshape(3, 4, 16)
    assert torch.equal(slices, slices[:, :1].expand_as(slices))
    assert torch.equal(out.mask_2, out.mask.reshape(3, 4, 16).roll(8, dims=2).reshape(3, 64))
    assert torch.equal(roll_tube_mask(out.mask, (4, 4, 4)), out.mask_2)
    # reconstruction: the mean of VideoMAE's loss on each view, for the same weights
    videomae = VideoMAEForPreTraining(hf_mae.create_config("videomae-tiny", **{k: v for k, v in SMALL.items()
                                                                                 if k != "projection_dim"})).eval()  # fmt: skip
    videomae.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(("videomae.", "decoder."))})
    first = videomae(clips, bool_masked_pos=out.mask.bool())
    second = videomae(clips, bool_masked_pos=out.mask_2.bool())
    assert torch.equal(first.logits, out.logits)
    torch.testing.assert_close(out.reconstruction_loss, (first.loss + second.loss) / 2, rtol=1e-6, atol=0)
    # a fixed mask samples frames 2 and 6 (centres of 2 equal segments); the frame encoder sees every patch
    frames = model.frame_encoder(clips[:, [2, 6]].flatten(0, 1), mask_ratio=0.0).last_hidden_state[:, 1:].mean(1)
    expected = model.frame_projector(frames).reshape(3, 2, -1).transpose(0, 1)
    torch.testing.assert_close(out.frame_embeds, expected, rtol=0, atol=1e-6)
    same = model(clips, noise=noise, frame_indices=torch.tensor([[2, 6]] * 3))
    assert torch.equal(same.frame_embeds, out.frame_embeds)
    # video embeddings: the projected mean of each view's visible tokens; the losses by their definitions
    visible = model.videomae(clips, bool_masked_pos=out.mask_2.bool()).last_hidden_state.mean(1)
    torch.testing.assert_close(out.video_embeds[1], model.video_projector(visible), rtol=0, atol=1e-6)
    intra = nt_xent(out.video_embeds[0], out.video_embeds[1], 0.1)[0]
    cross = sum(info_nce(v, f, 0.1)[0] for v in out.video_embeds for f in out.frame_embeds) / 4
    torch.testing.assert_close(out.intra_loss, intra)
    torch.testing.assert_close(out.cross_loss, cross)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 0.5 * intra + 2.0 * cross)
    # without a fixed mask the frames, their masks and the second view are drawn
    drawn = model(clips)
    assert drawn.mask_2.sum(1).tolist() == [60] * 3 and not torch.equal(drawn.frame_embeds, out.frame_embeds)


def clip_batch(seeds, frames=8, size=32, square=16):
    """(len(seeds), frames, 3, size, size) ImageNet-normalised moving-square clips, motions cycling over the 4."""
    from synthetic_video import MOTIONS, moving_square

    motions = list(MOTIONS)
    clips = np.stack([moving_square(motions[s % 4], frames, size, square, seed=int(s)) for s in seeds])
    x = torch.from_numpy(clips).float().div(255).permute(0, 1, 4, 2, 3)
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    return (x - mean) / std


def test_video_to_frame_retrieval_rises_above_chance(one_thread):
    """Clips differ by the colour, start and motion of a 16-px square; at r = 0.9 a 4 x 4 grid keeps 1 position per
    slice (often background only), so the test masks half of the clip and of each frame."""
    torch.manual_seed(0)
    model = hf_mae.create_model("crossvideomae-tiny", mask_ratio=0.5, frame_mask_ratio=0.5, **SMALL)
    generator = torch.Generator().manual_seed(1)
    held_out = [(clip_batch(range(10_000 + 8 * i, 10_008 + 8 * i)), torch.rand(8, 16, generator=generator))
                for i in range(4)]  # fmt: skip

    def evaluate():  # 4 batches of 8 held-out clips, fixed masks, evenly spaced frames
        model.eval()
        with torch.no_grad():
            outs = [model(clips, noise=noise) for clips, noise in held_out]
        model.train()
        return [sum(getattr(o, key).item() for o in outs) / 4 for key in ("cross_accuracy", "reconstruction_loss")]

    before, recon_before = evaluate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    for step in range(150):
        loss = model(clip_batch(range(8 * step, 8 * step + 8))).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, recon_after = evaluate()
    print(f"video->frame top-1 in batches of 8 held-out clips (chance 0.125): {before:.3f} -> {after:.3f}; "
          f"reconstruction {recon_before:.4f} -> {recon_after:.4f}")  # fmt: skip
    assert before < 0.3 and after >= 0.5
    assert recon_after < 0.85 * recon_before


def test_frame_encoder_by_config_dict_folder_and_instance(tmp_path):
    vit = dict(model_type="vit", image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1,
               num_attention_heads=2, intermediate_size=48)  # fmt: skip
    model = hf_mae.create_model("crossvideomae-tiny", frame_encoder_config=vit, **SMALL).eval()
    assert type(model.frame_encoder) is ViTModel and model.frame_encoder.config.hidden_size == 24
    clips, noise = torch.randn(2, 8, 3, 32, 32), torch.rand(2, 16)
    expected = model(clips, noise=noise)
    model.save_pretrained(tmp_path / "run")
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path / "run").eval()
    assert type(loaded.frame_encoder) is ViTModel
    assert torch.equal(loaded(clips, noise=noise).loss, expected.loss)

    # a name or folder: pretrained weights (a local folder here: nothing downloads)
    teacher = ViTModel(ViTConfig(**{k: v for k, v in vit.items() if k != "model_type"}), add_pooling_layer=False)
    teacher.save_pretrained(tmp_path / "teacher")
    named = hf_mae.create_model("crossvideomae-tiny", frame_encoder_name_or_path=str(tmp_path / "teacher"), **SMALL)
    assert torch.equal(named.frame_encoder.embeddings.patch_embeddings.projection.weight,
                       teacher.embeddings.patch_embeddings.projection.weight)  # fmt: skip
    # an instance: used as is, not re-initialised
    config = hf_mae.create_config("crossvideomae-tiny", **SMALL)
    given = CrossVideoMAEForPreTraining(config, frame_encoder=teacher)
    assert given.frame_encoder is teacher and config.frame_encoder_config["hidden_size"] == 24
    assert given(clips, noise=noise).frame_embeds.shape == (2, 2, 32)
    with pytest.raises(TypeError, match="frame_encoder"):
        CrossVideoMAEForPreTraining(hf_mae.create_config("crossvideomae-tiny", **SMALL), frame_encoder=torch.nn.Linear(2, 2))


def test_bad_inputs_raise_clear_errors():
    for overrides, pattern in (
        (dict(num_sampled_frames=9), "num_sampled_frames"),
        (dict(num_sampled_frames=0), "num_sampled_frames"),
        (dict(contrast_temperature=0.0), "contrast_temperature"),
        (dict(cross_weight=-1.0), "cross_weight"),
        (dict(frame_mask_ratio=1.0), "mask_ratio"),
    ):
        with pytest.raises(ValueError, match=pattern):
            hf_mae.create_config("crossvideomae-tiny", **overrides)
    with pytest.raises(TypeError, match="frame_encoder_config"):
        hf_mae.create_config("crossvideomae-tiny", frame_encoder_config="vit")
    model = hf_mae.create_model("crossvideomae-tiny", **SMALL).eval()
    clips = torch.randn(2, 8, 3, 32, 32)
    with pytest.raises(ValueError, match="frame_indices"):
        model(clips, frame_indices=torch.tensor([[0, 8], [1, 2]]))
    with pytest.raises(ValueError, match="frame_pixel_values"):
        model(clips, frame_pixel_values=clips[:, 0])


def test_pretrain_cli_on_a_folder_of_video_files(tmp_path, one_thread):
    pytest.importorskip("av", reason="PyAV (`pip install av`) decodes the video files")
    from synthetic_video import write_motion_dataset

    data = write_motion_dataset(tmp_path / "clips", per_class=4, frames=16, size=32)
    argv = ["--model", "crossvideomae-tiny", "--dataset", str(data), "--max-steps", "30",
            "--batch-size", "4", "--lr", "1e-3", "--log-steps", "5",
            "--config-overrides", "hidden_size=64", "num_hidden_layers=2", "intermediate_size=128"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    print(f"crossvideomae-tiny loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 26-30)")
    assert records[-1]["loss"] < 0.95 * records[0]["loss"]  # mostly contrastive terms at batch 4: they fall slowly
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path / "run").eval()
    assert type(loaded).__name__ == "CrossVideoMAEForPreTraining" and loaded.config.hidden_size == 64
    # the saved model reconstructs held-out moving squares better than its random initialisation
    fresh = hf_mae.create_model("crossvideomae-tiny", hidden_size=64, num_hidden_layers=2, intermediate_size=128).eval()
    clips, noise = clip_batch(range(20_000, 20_008), square=8), torch.rand(8, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        trained, untrained = loaded(clips, noise=noise).reconstruction_loss, fresh(clips, noise=noise).reconstruction_loss
    print(f"held-out reconstruction: random init {untrained.item():.4f}, after 30 steps {trained.item():.4f}")
    assert trained < 0.9 * untrained
