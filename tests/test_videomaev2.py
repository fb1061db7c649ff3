"""VideoMAE V2: the running-cell decoder mask against a hand-derived pattern, dual masking equal to VideoMAE when the
decoder masks nothing, the loss over decoded-and-hidden tokens only, and pre-training from video files."""


import pytest
import torch
from conftest import run_pretrain

import hf_mae
from hf_mae.modeling.masking import RunningCellMaskGenerator, running_cell_mask
from hf_mae.modeling.videomae import VideoMAEForPreTraining

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, decoder_hidden_size=32,
             decoder_num_hidden_layers=1, decoder_num_attention_heads=4, decoder_intermediate_size=64)  # fmt: skip


def test_running_cell_mask_by_hand():
    # r = 0.5: the queue [1, 1, 0, 0] read from offset start + 1 + t gives slice t's 2x2 cell (1 = not decoded)
    mask = running_cell_mask((4, 2, 4), 0.5, start=0).reshape(4, 2, 4)
    cells = [[[1, 0], [0, 1]], [[0, 0], [1, 1]], [[0, 1], [1, 0]], [[1, 1], [0, 0]]]  # offsets 1, 2, 3, 0
    for t, cell in enumerate(cells):
        assert mask[t].tolist() == [row * 2 for row in cell], t  # the cell tiled twice along the width
    # every slice hides int(4 r) of every cell; over 4 slices every position is decoded equally often
    for ratio, hidden in ((0.25, 1), (0.5, 2), (0.75, 3)):
        for start in range(4):
            m = running_cell_mask((8, 4, 6), ratio, start).reshape(8, 4, 6)
            assert m.sum((1, 2)).tolist() == [hidden * 6] * 8
            assert torch.equal(m[:4].sum(0), torch.full((4, 6), float(hidden)))
    with pytest.raises(ValueError, match="even"):
        running_cell_mask((2, 3, 4), 0.5, 0)
    with pytest.raises(ValueError, match="mask_ratio"):
        running_cell_mask((2, 4, 4), 0.2, 0)


def test_running_cell_generator_draws_one_of_four_starts():
    generator = RunningCellMaskGenerator()
    drawn = generator(64, 32, 0.5, (2, 4, 4), generator=torch.Generator().manual_seed(0)).mask
    patterns = torch.stack([running_cell_mask((2, 4, 4), 0.5, s) for s in range(4)])
    matches = (drawn[:, None] == patterns[None]).all(-1)
    assert matches.sum(1).tolist() == [1] * 64  # every clip gets exactly one of the 4 patterns
    assert set(matches.float().argmax(1).tolist()) == {0, 1, 2, 3}


def test_without_decoder_masking_it_equals_videomae():
    v2 = hf_mae.create_model("videomaev2-tiny", decoder_mask_ratio=0.0, **SMALL).eval()
    v1 = VideoMAEForPreTraining(hf_mae.create_config("videomae-tiny", **SMALL)).eval()
    v1.load_state_dict(v2.state_dict())
    clips, noise = torch.randn(3, 8, 3, 32, 32), torch.rand(3, 16)
    a, b = v2(clips, noise=noise), v1(clips, noise=noise)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
    # the same with the ratio switched off per call
    c = hf_mae.create_model("videomaev2-tiny", **SMALL).eval()
    c.load_state_dict(v2.state_dict())
    assert torch.equal(c(clips, noise=noise, decoder_mask_ratio=0.0).loss, b.loss)


def test_dual_masking_decodes_half_and_counts_only_hidden_decoded_tokens():
    model = hf_mae.create_model("videomaev2-tiny", **SMALL).eval()
    clips, noise = torch.randn(3, 8, 3, 32, 32), torch.rand(3, 16)
    out = model(clips, noise=noise)
    decode = ~out.decoder_mask.bool()
    assert decode.sum(1).tolist() == [32] * 3 and out.logits.shape[:2] == (3, 32)  # half of the 64 tokens
    hidden = out.mask.bool()
    assert out.loss_mask.sum(1).tolist() == (decode & hidden).sum(1).tolist()
    # by hand: the MSE over the decoded tokens the encoder did not see
    target = model.target(clips)[decode].reshape(3, 32, -1)
    per_token = (out.logits - target).pow(2).mean(-1)
    expected = per_token[hidden[decode].reshape(3, 32)].mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=0)
    # the decoder mask is an argument too; a bad one is refused
    same = model(clips, noise=noise, decoder_mask=out.decoder_mask.bool())
    assert torch.equal(same.logits, out.logits)
    with pytest.raises(ValueError, match="same number"):
        model(clips, noise=noise, decoder_mask=torch.arange(64).expand(3, -1) < torch.tensor([[10], [20], [30]]))
    with pytest.raises(ValueError, match="decoder_mask"):
        model(clips, noise=noise, decoder_mask=torch.zeros(3, 10, dtype=torch.bool))


def test_pretrain_cli_on_a_folder_of_video_files(tmp_path, one_thread):
    pytest.importorskip("av", reason="PyAV (`pip install av`) decodes the video files")
    from synthetic_video import write_motion_dataset

    data = write_motion_dataset(tmp_path / "clips", per_class=4, frames=16, size=32)
    argv = ["--model", "videomaev2-tiny", "--dataset", str(data), "--max-steps", "30",
            "--batch-size", "4", "--lr", "1e-3", "--log-steps", "5",
            "--config-overrides", "hidden_size=64", "num_hidden_layers=2", "intermediate_size=128"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    print(f"videomaev2-tiny loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 26-30)")
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]
