"""TGM: the text-guided mask equals the top-k of a similarity map computed by hand from the tiny CLIP, video-text
contrastive accuracy rises above chance while reconstruction falls, the frozen scorer stays out of the checkpoint,
Auto and remote-code round trips (TGM is not in the shared video suite: it needs captions), and pre-training from
a folder of video files with captions."""

import json

import numpy as np
import pytest
import torch
from conftest import run_pretrain
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForVideoClassification,
    AutoProcessor,
    CLIPModel,
)

import hf_mae
from hf_mae.modeling.tgm import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, TGMForPreTraining, text_guided_mask
from hf_mae.modeling.videomae import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hf_mae.processors.processing_tgm import TGMProcessor

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, decoder_hidden_size=32,
             decoder_num_hidden_layers=1, decoder_num_attention_heads=4, decoder_intermediate_size=64)  # fmt: skip
COLOURS = {"red": (230, 30, 30), "green": (30, 230, 30), "blue": (30, 30, 230)}
MOTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
CAPTIONS = [f"a {colour} square moving {motion}" for colour in COLOURS for motion in MOTIONS]  # 12 distinct


def clip_for(caption: str, rng, frames: int = 8, size: int = 32, square: int = 8) -> np.ndarray:
    """(frames, size, size, 3) uint8: the caption's square (colour, direction) on a dark background, 2 px a frame."""
    words = caption.split()
    colour, (dy, dx) = COLOURS[words[1]], MOTIONS[words[-1]]
    y0, x0 = rng.integers(0, size, 2)
    clip = np.full((frames, size, size, 3), 16, np.uint8)
    for t in range(frames):
        rows, cols = (y0 + 2 * dy * t + np.arange(square)) % size, (x0 + 2 * dx * t + np.arange(square)) % size
        clip[t][np.ix_(rows, cols)] = colour
    return clip


def as_pixel_values(clips) -> torch.Tensor:
    """uint8 clips -> (batch, frames, 3, H, W), ImageNet-normalised as the processor returns them."""
    x = torch.as_tensor(np.stack(clips)).permute(0, 1, 4, 2, 3).contiguous().float() / 255
    return (x - torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)


def batch_for(captions, seed=0, processor=None):
    rng = np.random.default_rng(seed)
    processor = processor or hf_mae.create_processor("tgm-tiny")
    tokens = processor(text=list(captions), return_tensors="pt")
    return as_pixel_values([clip_for(c, rng) for c in captions]), tokens["input_ids"], tokens["attention_mask"]


def test_the_mask_is_the_top_k_of_the_similarity_map_by_hand():
    model = hf_mae.create_model("tgm-tiny", **SMALL).eval()
    pixels, ids, attention = batch_for(CAPTIONS[:4])
    out = model(pixels, input_ids=ids, attention_mask=attention)

    # by hand, from the tiny CLIP: patch embeddings (post-LN, projected) vs the caption embedding, per frame
    clip = model.dual_encoder(pixels.device)
    frames = pixels.flatten(0, 1) * torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1) + torch.tensor(
        IMAGENET_DEFAULT_MEAN).view(3, 1, 1)  # fmt: skip
    frames = (frames - torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    with torch.no_grad():
        patches = clip.visual_projection(clip.vision_model.post_layernorm(clip.vision_model(frames).last_hidden_state[:, 1:]))
        text = clip.text_projection(clip.text_model(input_ids=ids, attention_mask=attention).pooler_output)
    patches, text = patches / patches.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    per_frame = (patches.reshape(4, 8, 16, -1) * text[:, None, None]).sum(-1)  # (clips, frames, 4x4 patches)
    expected = (per_frame[:, 0::2] + per_frame[:, 1::2]) / 2  # a tubelet: the mean of its two frames
    torch.testing.assert_close(out.similarity, expected.reshape(4, 64), rtol=0, atol=1e-5)

    # r = 0.9 keeps int(16 * 0.1) = 1 position per slice, as tube masking: the 15 most similar of each slice hidden
    order = expected.argsort(dim=-1, descending=True)
    hidden = torch.zeros(4, 4, 16, dtype=torch.bool)
    for b in range(4):
        for s in range(4):
            hidden[b, s, order[b, s, :15]] = True
    assert out.mask.sum(1).tolist() == [60] * 4 and torch.equal(out.mask.bool(), hidden.reshape(4, 64))
    # the one kept position per slice is the least caption-like one
    kept = (~out.mask.bool()).reshape(4, 4, 16).float().argmax(-1)
    assert torch.equal(kept, expected.argmin(-1))
    # scope "clip": the 60 most similar tokens of the whole clip
    clip_wide = text_guided_mask(out.similarity, (4, 4, 4), 0.9, scope="clip")
    assert torch.equal(clip_wide, torch.zeros(4, 64, dtype=torch.bool).scatter_(1, out.similarity.argsort(1)[:, 4:], True))
    # another caption moves the mask; the same caption gives the same mask
    other = model(pixels, input_ids=ids.roll(1, 0), attention_mask=attention.roll(1, 0))
    assert not torch.equal(other.mask, out.mask)
    assert torch.equal(model(pixels, input_ids=ids, attention_mask=attention).mask, out.mask)


def test_contrastive_accuracy_rises_above_chance_and_reconstruction_falls():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # r = 0.75 keeps 4 of 16 positions per slice, so some of the square stays visible to align with its caption
        model = hf_mae.create_model("tgm-tiny", mask_ratio=0.75, contrastive_temperature=0.1, **SMALL)
        processor = hf_mae.create_processor("tgm-tiny")
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

        def evaluate(seeds=range(100, 104)):
            model.eval()
            with torch.no_grad():
                outs = [model(*batch_for(CAPTIONS, seed, processor)[:1], *batch_for(CAPTIONS, seed, processor)[1:])
                        for seed in seeds]  # fmt: skip
            model.train()
            return (float(np.mean([o.contrastive_accuracy.item() for o in outs])),
                    float(np.mean([o.reconstruction_loss.item() for o in outs])))  # fmt: skip

        before = evaluate()
        for step in range(250):
            pixels, ids, attention = batch_for(CAPTIONS, seed=step, processor=processor)
            loss = model(pixels, input_ids=ids, attention_mask=attention).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        after = evaluate()
    finally:
        torch.set_num_threads(threads)
    chance = 1 / len(CAPTIONS)
    print(f"tgm-tiny video->text top-1 over 12 captions: {before[0]:.3f} -> {after[0]:.3f} (chance {chance:.3f}); "
          f"reconstruction {before[1]:.4f} -> {after[1]:.4f}")  # fmt: skip
    assert after[0] >= 4 * chance
    assert after[1] < 0.8 * before[1]


def test_every_trainable_parameter_gets_a_gradient_and_the_scorer_is_frozen_and_not_saved():
    model = hf_mae.create_model("tgm-tiny", **SMALL).train()
    pixels, ids, attention = batch_for(CAPTIONS[:3])
    model(pixels, input_ids=ids, attention_mask=attention).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, missing
    assert not any(name.startswith("clip") for name in model.state_dict())
    assert not any(p.requires_grad for p in model.clip.parameters()) and not model.clip.training
    # the random scorer is rebuilt from clip_seed: a fresh model scores alike; another seed does not
    fresh = hf_mae.create_model("tgm-tiny", **SMALL)
    a, b = model.similarity_map(pixels, ids, attention), fresh.similarity_map(pixels, ids, attention)
    assert torch.equal(a, b)
    other = hf_mae.create_model("tgm-tiny", clip_seed=1, **SMALL).similarity_map(pixels, ids, attention)
    assert (a - other).abs().max() > 1e-3


def test_towers_by_name_or_instance(tmp_path):
    """A saved CLIPModel folder stands in for a Hub name: the text tower starts from its text weights, the scorer is
    the model itself; instances work too, and the saved config rebuilds the tower without the folder."""
    clip_config = hf_mae.create_config("tgm-tiny").clip_config
    torch.manual_seed(3)
    reference = AutoModel.from_config(AutoConfig.for_model(**clip_config))
    reference.save_pretrained(tmp_path / "clip")
    name = str(tmp_path / "clip")
    model = hf_mae.create_model("tgm-tiny", text_config=None, text_encoder_name_or_path=name, clip_config=None,
                                clip_name_or_path=name, projection_dim=32, **SMALL)  # fmt: skip
    tower = model.text_encoder.state_dict()
    for key, value in reference.text_model.state_dict().items():
        assert torch.equal(tower[key], value), key
    assert model.config.text_config["model_type"] == "clip_text_model"
    pixels, ids, attention = batch_for(CAPTIONS[:2])
    by_name = model.similarity_map(pixels, ids, attention)
    by_instance = TGMForPreTraining(model.config, clip_model=reference).similarity_map(pixels, ids, attention)
    assert isinstance(model.clip, CLIPModel) and torch.equal(by_name, by_instance)
    model.save_pretrained(tmp_path / "tgm")
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path / "tgm", text_encoder_name_or_path=None)
    assert torch.equal(reloaded.text_encoder.state_dict()["embeddings.token_embedding.weight"],
                       reference.text_model.embeddings.token_embedding.weight)  # fmt: skip
    with pytest.raises(TypeError, match="clip_model"):
        TGMForPreTraining(model.config, clip_model=torch.nn.Linear(2, 2))


def test_auto_round_trip(tmp_path):
    model = hf_mae.create_model("tgm-tiny", **SMALL).eval()
    pixels, ids, attention = batch_for(CAPTIONS[:3])
    expected = model(pixels, input_ids=ids, attention_mask=attention)
    model.save_pretrained(tmp_path)
    processor = hf_mae.create_processor("tgm-tiny")
    processor.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is TGMForPreTraining
    got = loaded(pixels, input_ids=ids, attention_mask=attention)  # its scorer rebuilt from clip_seed
    assert torch.equal(got.mask, expected.mask) and torch.equal(got.logits, expected.logits)
    assert torch.equal(got.loss, expected.loss)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(encoder(pixels, bool_masked_pos=expected.mask.bool()).last_hidden_state,
                               model.videomae(pixels, bool_masked_pos=expected.mask.bool()).last_hidden_state,
                               rtol=0, atol=0)  # fmt: skip
    classifier, info = AutoModelForVideoClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert all(key.startswith(("classifier", "fc_norm")) for key in info["missing_keys"]), info["missing_keys"]
    assert classifier(pixels).logits.shape == (3, 3)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is TGMProcessor and reloaded.max_text_length == 32 and reloaded.num_frames == 8
    assert torch.equal(reloaded(text=CAPTIONS[:3], return_tensors="pt")["input_ids"], ids)


def test_remote_code_round_trip(tmp_path):
    from remote_check import load_in_fresh_process

    from hf_mae.hub import save_pretrained_with_code

    model = hf_mae.create_model("tgm-tiny", **SMALL).eval()
    pixels, ids, attention = batch_for(CAPTIONS[:3])
    expected = model(pixels, input_ids=ids, attention_mask=attention)
    save_pretrained_with_code(model, tmp_path)
    inputs = {"pixel_values": pixels, "input_ids": ids, "attention_mask": attention}
    outputs = load_in_fresh_process(tmp_path, "AutoModelForPreTraining", inputs, {})
    assert torch.equal(outputs["mask"], expected.mask)
    torch.testing.assert_close(outputs["logits"], expected.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs["loss"], expected.loss, rtol=0, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    model = hf_mae.create_model("tgm-tiny", **SMALL)
    pixels, ids, attention = batch_for(CAPTIONS[:2])
    with pytest.raises(ValueError, match="input_ids"):
        model(pixels, input_ids=ids[:1])
    with pytest.raises(ValueError, match="noise"):
        model(pixels, input_ids=ids, noise=torch.rand(2, 16))
    with pytest.raises(ValueError, match="mask_scope"):
        hf_mae.create_config("tgm-tiny", mask_scope="frame")
    with pytest.raises(ValueError, match="clip_config"):
        hf_mae.create_config("tgm-tiny", clip_config={"projection_dim": 8})
    with pytest.raises(ValueError, match="one caption per video"):
        hf_mae.create_processor("tgm-tiny")([np.zeros((8, 32, 32, 3), np.uint8)] * 2, text=["one"])
    with pytest.raises(TypeError, match="text"):
        hf_mae.create_processor("tgm-tiny")(text=[3])
    # without captions TGM is VideoMAE: tube masking, reconstruction only
    out = model(pixels, noise=torch.rand(2, 16))
    assert out.contrastive_loss is None and torch.equal(out.loss, out.reconstruction_loss)


def test_pretrain_cli_on_video_files_with_captions(tmp_path, one_thread):
    pytest.importorskip("av", reason="PyAV (`pip install av`) decodes the video files")
    from synthetic_video import write_clip

    rng = np.random.default_rng(0)
    rows = []
    for i, caption in enumerate(CAPTIONS * 2):
        path = write_clip(tmp_path / "clips" / f"{i}.mp4", clip_for(caption, rng, frames=16))
        rows.append({"video": str(path), "caption": caption})
    (tmp_path / "data").mkdir()  # a json data set: video paths and their captions
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["--model", "tgm-tiny", "--dataset", str(tmp_path / "data"), "--max-steps", "30",
            "--batch-size", "6", "--lr", "1e-3", "--log-steps", "5",
            "--config-overrides", "hidden_size=64", "num_hidden_layers=2", "intermediate_size=128"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    print(f"tgm-tiny loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 26-30)")
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]
    run = AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    processor = TGMProcessor.from_pretrained(tmp_path / "run")
    batch = processor(rows[0]["video"], text=rows[0]["caption"], return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 8, 3, 32, 32) and batch["input_ids"].shape == (1, 32)
    assert type(run) is TGMForPreTraining and not any(k.startswith("clip") for k in run.state_dict())
