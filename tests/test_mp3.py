"""MP3: key masking checked against a hand-computed attention, no positions at the input (outputs follow the patches
when they are moved), position accuracy on digits well above chance with and without key masking, fine-tuning
positions, and a 20-step `hf-mae pretrain` run. The shared model suite (tests/test_models.py) covers the rest for the
mp3 presets."""

import math
import pytest
import torch
from conftest import digits_pixels, run_pretrain
from transformers import AutoModelForImageClassification, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.mp3 import MP3Config, MP3ForImageClassification, MP3ForPreTraining, position_accuracy

SMALL = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def small_model(attn_implementation="eager", **overrides):
    config = MP3Config(**{**SMALL, **overrides})
    return MP3ForPreTraining._from_config(config, attn_implementation=attn_implementation).eval()


def test_non_context_keys_get_exactly_zero_attention():
    torch.manual_seed(0)
    model = small_model()  # a 4x4 grid: 16 patches, int(16 * 0.25) = 4 of them context at eta = 0.75
    pixel_values, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    out = model(pixel_values, noise=noise, output_attentions=True)
    context = noise.argsort(1)[:, :4]
    assert torch.equal(out.mask, torch.ones(2, 16).scatter_(1, context, 0.0))
    keys = torch.cat([torch.ones(2, 1), 1 - out.mask], dim=1).bool()  # cls + context patches
    for weights in out.attentions:  # (batch, heads, 17 queries, 17 keys)
        assert weights.shape == (2, 2, 17, 17)
        assert torch.equal(weights.masked_select(~keys[:, None, None, :]), torch.zeros(2 * 2 * 17 * 12))
        assert (weights.masked_select(keys[:, None, None, :]) > 0).all()

    # layer 1 by hand: softmax(q k^T / sqrt(d)) over the cls token and the 4 context patches only
    encoder = model.mp3
    tokens = encoder.embeddings(pixel_values, (4, 4))
    block = encoder.layers[0]
    q, k, _ = block.attention.qkv(block.norm1(tokens)).view(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
    for b in range(2):
        visible = [0] + (context[b] + 1).tolist()
        by_hand = torch.softmax(q[b] @ k[b][:, visible].transpose(-1, -2) / math.sqrt(16), dim=-1)
        torch.testing.assert_close(out.attentions[0][b][:, :, visible], by_hand, rtol=0, atol=1e-6)

    # consequence: a non-context patch's content reaches no other token; a context patch's reaches every token
    hidden_patch, context_patch = int(out.mask[0].argmax()), int(context[0, 0])
    base = encoder(pixel_values, noise=noise).last_hidden_state[0]
    for patch, changes_others in ((hidden_patch, False), (context_patch, True)):
        edited = pixel_values.clone()
        row, col = divmod(patch, 4)
        edited[0, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] += 3.0
        others = [i for i in range(17) if i != patch + 1]
        gap = (encoder(edited, noise=noise).last_hidden_state[0][others] - base[others]).abs().max().item()
        print(f"patch {patch} (context: {changes_others}) edited: max change of the other tokens {gap:.2e}")
        assert (gap > 1e-3) if changes_others else (gap == 0.0)

    # sdpa gets the same additive mask and agrees; mask_ratio=0 attends to every key
    sdpa = small_model("sdpa")
    sdpa.load_state_dict(model.state_dict())
    torch.testing.assert_close(sdpa(pixel_values, noise=noise).logits, out.logits, rtol=0, atol=1e-5)
    full = model(pixel_values, mask_ratio=0.0, output_attentions=True)
    assert full.mask.sum() == 0 and (full.attentions[0] > 0).all()


def test_no_position_embedding_at_the_input_moving_patches_moves_the_outputs():
    torch.manual_seed(0)
    model = small_model()
    pixel_values = torch.randn(2, 3, 16, 16)
    order = torch.randperm(16)  # patch j of the shuffled image is patch order[j] of the original
    patches = pixel_values.reshape(2, 3, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(2, 16, 3, 4, 4)
    shuffled = patches[:, order].reshape(2, 4, 4, 3, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(2, 3, 16, 16)
    noise = torch.rand(2, 16)
    original = model.mp3(pixel_values, noise=noise).last_hidden_state
    moved = model.mp3(shuffled, noise=noise[:, order]).last_hidden_state  # the same patches are context
    torch.testing.assert_close(moved[:, 1:], original[:, 1 + order], rtol=0, atol=1e-5)
    torch.testing.assert_close(moved[:, 0], original[:, 0], rtol=0, atol=1e-5)
    assert not any("position" in name for name, _ in model.named_parameters() if "classifier" not in name)


def test_fine_tuning_adds_zero_initialised_positions_and_pretraining_refuses_other_sizes(tmp_path):
    torch.manual_seed(0)
    model = small_model()
    model.save_pretrained(tmp_path)
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3).eval()
    assert isinstance(classifier, MP3ForImageClassification)
    positions = classifier.mp3.embeddings.position_embeddings
    assert positions.shape == (1, 17, 32) and torch.equal(positions, torch.zeros_like(positions))
    pixel_values = torch.randn(2, 3, 16, 16)
    # zero positions: fine-tuning starts from the pre-trained encoder's function (full attention, cls pooling)
    torch.testing.assert_close(
        classifier.mp3(pixel_values, mask_ratio=0.0).last_hidden_state,
        model.mp3(pixel_values, mask_ratio=0.0).last_hidden_state,
        rtol=0, atol=1e-6,
    )
    assert classifier(torch.randn(2, 3, 24, 16), interpolate_pos_encoding=True).logits.shape == (2, 3)
    assert MP3ForImageClassification(MP3Config(**SMALL, finetune_position_embeddings=False)).mp3.embeddings.position_embeddings is None
    with pytest.raises(ValueError, match="16 positions of the config's image_size 16x16"):
        model(torch.randn(2, 3, 24, 16), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(2, 3, 24, 16))
    with pytest.raises(ValueError, match="classifier_pooling"):
        MP3Config(**SMALL, classifier_pooling="max")


def train_positions(mask_ratio, steps=150, batch_size=64, seed=0):
    """A small MP3 (64-d x 2 blocks, mp3-tiny's 8x8 grid) trained on digits; position accuracy on 256 test images
    (all tokens, and the non-context ones) before and after, with a fixed context at the config's ratio."""
    pixels, _ = digits_pixels("train")
    test_pixels = digits_pixels("test")[0][:256]
    torch.manual_seed(seed)
    model = hf_mae.create_model("mp3-tiny", hidden_size=64, num_hidden_layers=2, intermediate_size=256, mask_ratio=mask_ratio)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    noise = torch.rand(256, 64, generator=torch.Generator().manual_seed(1))

    def accuracy():
        with torch.no_grad():
            out = model.eval()(test_pixels, noise=noise)
        model.train()
        return position_accuracy(out.logits).item(), position_accuracy(out.logits, out.mask).item()

    before = accuracy()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = model(pixels[torch.randint(0, len(pixels), (batch_size,), generator=generator)]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return before, accuracy()


@pytest.mark.parametrize("mask_ratio", [0.75, 0.0], ids=["key-masking", "no-key-masking"])
def test_position_accuracy_rises_well_above_chance_on_digits(mask_ratio, one_thread):
    (before, _), (after, after_hidden) = train_positions(mask_ratio)
    print(f"mask_ratio {mask_ratio}: position accuracy {before:.3f} -> {after:.3f} after 150 steps "
          f"(non-context tokens {after_hidden:.3f}); chance {1 / 64:.3f}")
    assert before < 2 / 64
    assert after > 6 / 64  # six times chance; observed 0.15-0.16 (0.27 after 750 steps)
    if mask_ratio > 0:  # the tokens that see only the context (and themselves) are placed too
        assert after_hidden > 6 / 64


def test_pretrain_cli_runs_and_the_loss_falls(tmp_path, one_thread):
    argv = ["--model", "mp3-tiny", "--dataset", "digits", "--max-steps", "20",
            "--batch-size", "32", "--lr", "2e-3", "--log-steps", "5", "--no-augment",  # the un-augmented task
            "--config-overrides", "hidden_size=32", "num_hidden_layers=2", "intermediate_size=64"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    folder = tmp_path / "run"
    print(f"mp3-tiny position CE {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 16-20); "
          f"chance ln 64 = {math.log(64):.4f}")
    assert records[-1]["loss"] < 0.95 * records[0]["loss"]
    assert not (folder / "reconstruction.png").exists()  # logits are positions, not pixels: nothing to draw
    assert isinstance(AutoModelForPreTraining.from_pretrained(folder), MP3ForPreTraining)
