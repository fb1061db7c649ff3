"""Audio-MAE specifics: the Swin decoder's (shifted) window attention, the norm-pix loss by hand, and
``hf-mae pretrain`` on a folder of .wav files. The shared audio model suite is tests/test_audio_models.py."""

import copy
import wave

import numpy as np
import pytest
import torch
from conftest import requires_flex_attention, run_pretrain
from transformers import AutoFeatureExtractor, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.audiomae import AudioMAEDecoder, AudioMAEForPreTraining, window_attention_mask
from hf_mae.modeling.layers import Attention


def allowed_from_groups(row_groups, col_groups) -> torch.Tensor:
    """(N, N) bool over a row-major grid: True where both tokens fall in the same row group and column group."""
    rows, cols = sum(map(len, row_groups)), sum(map(len, col_groups))
    row_of = {r: g for g, group in enumerate(row_groups) for r in group}
    col_of = {c: g for g, group in enumerate(col_groups) for c in group}
    tokens = [(r, c) for r in range(rows) for c in range(cols)]
    return torch.tensor([[row_of[a] == row_of[r] and col_of[b] == col_of[c] for (r, c) in tokens] for (a, b) in tokens])


def test_window_masks_by_hand():
    """An 8 x 8 (time x frequency) grid, windows (4, 4). Unshifted: four 4x4 blocks. Shifted by (2, 0): the official
    code rolls the grid up by 2 rows, so windows cover rows 2-5 and then {6, 7, 0, 1}; its region mask forbids the
    two rows that wrapped around (0, 1) to mix with rows 6, 7. Frequency is not shifted."""
    halves = [[0, 1, 2, 3], [4, 5, 6, 7]]
    plain = window_attention_mask((8, 8), (4, 4), (0, 0))
    shifted = window_attention_mask((8, 8), (4, 4), (2, 0))
    assert plain.shape == shifted.shape == (1, 1, 64, 64)
    assert torch.equal(plain[0, 0] == 0, allowed_from_groups(halves, halves))
    assert torch.equal(shifted[0, 0] == 0, allowed_from_groups([[0, 1], [2, 3, 4, 5], [6, 7]], halves))
    assert (plain[plain != 0] == torch.finfo(torch.float32).min).all()  # finite: no row can turn into NaN
    # 12 time rows: shifted windows {2..5}, {6..9}, then the wrapped strip split into {10, 11} and {0, 1}
    assert torch.equal(window_attention_mask((12, 4), (4, 4), (2, 0))[0, 0] == 0,
                       allowed_from_groups([[0, 1], [2, 3, 4, 5], [6, 7, 8, 9], [10, 11]], [[0, 1, 2, 3]]))  # fmt: skip
    # an axis no longer than the window gets one window and no shift (timm's rule): here one window for everything
    assert (window_attention_mask((4, 2), (4, 4), (2, 0)) == 0).all()
    with pytest.raises(ValueError, match="multiple of decoder_window_size"):
        window_attention_mask((6, 8), (4, 4), (2, 0))
    with pytest.raises(ValueError, match="decoder_window_size"):
        hf_mae.create_config("audiomae-tiny", max_length=96)  # a 6 x 8 grid


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_window_attention_is_exactly_block_diagonal(implementation):
    """Through the shared attention interface a window block's attention weights are exactly 0 across windows,
    and its outputs do not move when tokens of other windows change."""
    config = hf_mae.create_config("audiomae-tiny")
    config._attn_implementation = implementation
    attention = Attention(config, 64, 4).eval()
    tokens = torch.randn(2, 64, 64)
    for shift in ((0, 0), (2, 0)):
        mask = window_attention_mask((8, 8), (4, 4), shift)
        _, weights = attention(tokens, mask, output_attentions=True)  # weights come from the eager kernel
        allowed = (mask[0, 0] == 0).expand_as(weights)
        assert (weights[~allowed] == 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 64))
        # change every token outside token 0's window: token 0's output stays the same with this kernel
        changed = torch.where(allowed[0, 0, 0][None, :, None], tokens, torch.randn_like(tokens))
        before, _ = attention(tokens, mask)
        after, _ = attention(changed, mask)
        torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=1e-6)


@requires_flex_attention
def test_swin_decoder_with_flex_attention_matches_eager(fresh_flex_compile):
    """The Swin decoder's (shifted) windows reach flex attention as a BlockMask (an additive mask tensor crashes the
    process on CPU): same weights, same input, flex and eager agree within 1e-5 (measured 6e-7, float32 rounding).

    Training with flex on CPU is not possible, for every model: torch 2.13's flex attention has no CPU backward and
    says so at ``loss.backward()`` (asserted below). Train on CPU with "sdpa" or "eager", or with flex on a GPU."""
    config = hf_mae.create_config("audiomae-tiny", decoder_num_hidden_layers=2)  # a window block and a shifted one
    decoders = {}
    for implementation in ("eager", "flex_attention"):
        config._attn_implementation = implementation
        decoders[implementation] = AudioMAEDecoder(copy.deepcopy(config)).eval()
    decoders["flex_attention"].load_state_dict(decoders["eager"].state_dict())
    latent = torch.randn(2, 1 + 16, config.hidden_size)  # cls + the 16 kept of an 8 x 8 grid
    ids_restore = torch.argsort(torch.rand(2, 64), dim=1)
    with torch.no_grad():
        eager = decoders["eager"](latent, ids_restore, (8, 8))
        flex = decoders["flex_attention"](latent, ids_restore, (8, 8))
    assert eager.shape == (2, 64, 16 * 16)
    torch.testing.assert_close(flex, eager, rtol=0, atol=1e-5)
    if not torch.cuda.is_available():
        with pytest.raises(NotImplementedError, match="does not support backward on CPU"):
            decoders["flex_attention"].train()(latent.requires_grad_(), ids_restore, (8, 8)).sum().backward()


def test_swin_decoder_is_local_and_global_decoder_is_not():
    """Two Swin blocks (window, then shifted window) spread a change at most to the union of the windows that
    touch it; the global decoder spreads it everywhere."""
    torch.manual_seed(0)
    values = torch.randn(1, 128, 128)
    noise = torch.rand(1, 64)
    for mode in ("swin", "global"):
        model = AudioMAEForPreTraining(hf_mae.create_config("audiomae-tiny", decoder_mode=mode)).eval()
        encoded = model.mae(values, noise=noise)
        latent = encoded.last_hidden_state
        base = model.decoder(latent, encoded.ids_restore, (8, 8))
        visible = int(encoded.ids_restore.argsort(1)[0, 0])  # the grid position of the first visible token
        moved = latent.clone()
        moved[:, 1] += 1.0
        changed = (model.decoder(moved, encoded.ids_restore, (8, 8)) - base).abs().amax(-1)[0] > 1e-6
        reach = (window_attention_mask((8, 8), (4, 4), (0, 0))[0, 0, visible] == 0).float()
        reach = ((window_attention_mask((8, 8), (4, 4), (2, 0))[0, 0] == 0).float() @ reach > 0) | (reach > 0)
        if mode == "swin":
            assert changed[visible] and not changed[~reach].any(), changed.reshape(8, 8)
        else:
            assert changed.all()


def test_norm_pix_loss_matches_a_hand_computation():
    """The loss is the MSE, over the hidden 16x16 patches only, against each patch's own (x - mean) / sqrt(var +
    1e-6) (unbiased variance, as MAE), with patch n = (time block i, frequency block j), n = i * 8 + j."""
    model = hf_mae.create_model("audiomae-tiny").eval()
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(2, 128, 128, generator=generator) * 3 + 1
    noise = torch.rand(2, 64, generator=generator)
    out = model(values, noise=noise)
    total, count = 0.0, 0
    for b in range(2):
        for i in range(8):
            for j in range(8):
                n = i * 8 + j
                if not out.mask[b, n]:
                    continue
                patch = values[b, 16 * i : 16 * (i + 1), 16 * j : 16 * (j + 1)].reshape(-1).double()
                target = (patch - patch.mean()) / (patch.var() + 1e-6).sqrt()
                total += ((out.logits[b, n].double() - target) ** 2).mean().item()
                count += 1
    assert count == 2 * (64 - int(64 * (1 - 0.8)))  # 0.8 of 64 patches hidden: 52 per clip
    print(f"hand loss {total / count:.6f}, model loss {out.loss.item():.6f}")
    assert abs(out.loss.item() - total / count) < 1e-5
    raw = hf_mae.create_model("audiomae-tiny", norm_pix_loss=False).eval()
    raw.load_state_dict(model.state_dict())
    out_raw = raw(values, noise=noise)
    hidden = out_raw.mask.bool()
    patches = values.reshape(2, 8, 16, 8, 16).permute(0, 1, 3, 2, 4).reshape(2, 64, 256)
    assert abs(out_raw.loss.item() - ((out_raw.logits - patches) ** 2).mean(-1)[hidden].mean().item()) < 1e-5


def write_tone_wavs(folder, per_class=8, rate=8000, seconds=0.5):
    """FSDD-style ``{label}_{speaker}_{index}.wav`` files: 16-bit mono tones, one pitch per label, plus noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    t = np.arange(int(rate * seconds)) / rate
    for label in range(4):
        for index in range(per_class):
            signal = 0.3 * np.sin(2 * np.pi * (300 + 400 * label) * t) + 0.02 * rng.standard_normal(t.size)
            with wave.open(str(folder / f"{label}_tone_{index}.wav"), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(rate)
                out.writeframes((signal * 32767).astype("<i2").tobytes())


def test_pretrain_cli_on_a_wav_folder(tmp_path, one_thread):
    """``hf-mae pretrain --model audiomae-tiny`` on 32 short 8-kHz wavs (resampled to 16 kHz, 128 frames): the loss
    falls and the run folder loads with the Auto classes."""
    write_tone_wavs(tmp_path / "wavs")
    folder = tmp_path / "run"
    records = run_pretrain(["--model", "audiomae-tiny", "--dataset", str(tmp_path / "wavs"), "--max-steps", "30",
                            "--batch-size", "8", "--lr", "2e-3", "--log-steps", "5", "--report-to", "none"], folder)  # fmt: skip
    print(f"loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 26-30)")
    assert records[-1]["loss"] < 0.75 * records[0]["loss"]  # observed ~0.62 -> ~0.37
    assert not (folder / "reconstruction.png").exists()  # the image grid is for image models
    model = AutoModelForPreTraining.from_pretrained(folder).eval()
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    assert type(model) is AudioMAEForPreTraining and extractor.max_length == 128
