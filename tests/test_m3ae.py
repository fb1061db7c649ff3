"""M3AE's mechanics by hand (the ITM pairing, the processor's draws, the MIM mask / target / loss, which fusion
layer each objective reads) and by training: on synthetic image-caption pairs the MLM accuracy on the colour words
is high with the right image and at chance with shuffled images, the MIM loss falls, ITM beats chance by a stated
margin; ``hf-mae pretrain`` end to end on coco-mini; the towers by config, instance, name (warm start) and family."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import run_pretrain, shared_data
from transformers import AutoModelForPreTraining, AutoProcessor, BertConfig, BertModel, ViTConfig, ViTModel

import hf_mae
from hf_mae import M3AEForPreTraining, M3AEModel, itm_pairs
from hf_mae.modeling.text import TINY_BERT_CONFIG
from hf_mae.registry import create_config, create_processor
from hf_mae.training.image_text_data import CAPTION_TEMPLATE, load_image_text_dataset

CAPTIONS = ["a black dog runs across a green field", "a cat sleeping on a sofa", "two birds on a wire"]


def random_images(count, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def processor():
    return create_processor("m3ae-tiny")


def batch_for(processor, seed=0, captions=CAPTIONS):
    generator = torch.Generator().manual_seed(seed)
    return dict(processor(random_images(len(captions), seed=seed), text=list(captions), return_tensors="pt",
                          for_pretraining=True, generator=generator))


# -- the ITM pairing and the processor's draws ----------------------------------------------------------------------


def test_itm_pairs_replace_half_the_images_by_another_groups():
    groups = ["a", "a", "b", "b", "c", "c"]
    for seed in range(20):
        labels, index = itm_pairs(6, 0.5, groups, torch.Generator().manual_seed(seed))
        assert int((labels == 0).sum()) == 3  # 6 - int(6 * 0.5)
        for row in range(6):
            if labels[row] == 1:
                assert index[row] == row
            else:
                assert groups[int(index[row])] != groups[row]
    # odd batches: batch - int(batch * (1 - rate)) negatives (the official pos_len = batch // 2)
    assert int((itm_pairs(5, 0.5, generator=torch.Generator().manual_seed(0))[0] == 0).sum()) == 3
    assert int((itm_pairs(4, 1.0)[0] == 0).sum()) == 4 and int((itm_pairs(4, 0.0)[0] == 0).sum()) == 0
    # one group: no other image to take, every pair stays matched
    labels, index = itm_pairs(3, 0.5, ["x", "x", "x"])
    assert labels.tolist() == [1, 1, 1] and index.tolist() == [0, 1, 2]
    # the same generator state: the same pairs
    a = itm_pairs(8, 0.5, generator=torch.Generator().manual_seed(3))
    b = itm_pairs(8, 0.5, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="one key per image"):
        itm_pairs(3, 0.5, ["a"])


def test_processor_draws_whole_word_mlm_at_fifteen_percent_with_bert_corruption(processor):
    coco = shared_data("coco-mini")
    rows = [json.loads(line) for line in (coco / "captions.jsonl").read_text().splitlines()]
    captions = [caption for row in rows for caption in row["captions"]]  # 795 human captions
    images = random_images(len(captions), size=8)
    out = processor(images, text=captions, return_tensors="pt", for_pretraining=True,
                    generator=torch.Generator().manual_seed(0))
    words = processor.tokenize(captions)
    masked = out["mlm_labels"] != -100
    ordinary = words["word_ids"] >= 0
    assert not (masked & ~ordinary).any()
    share = masked.sum().item() / ordinary.sum().item()
    assert abs(share - 0.15) < 0.02, share  # whole-word prefixes closest to 15% per caption
    # whole words: every piece of a masked word is masked
    for row in range(len(captions)):
        hit = set(words["word_ids"][row][masked[row]].tolist())
        assert all(bool(masked[row][words["word_ids"][row] == w].all()) for w in hit)
    # labels are the original ids; BERT's 80 / 10 / 10 corruption of the masked tokens
    assert torch.equal(out["mlm_labels"][masked], out["input_ids"][masked])
    corrupted = out["mlm_input_ids"][masked]
    mask_share = (corrupted == processor.tokenizer.mask_token_id).float().mean().item()
    kept_share = (corrupted == out["input_ids"][masked]).float().mean().item()
    assert abs(mask_share - 0.8) < 0.05 and abs(kept_share - 0.1) < 0.04, (mask_share, kept_share)
    assert torch.equal(out["mlm_input_ids"][~masked], out["input_ids"][~masked])
    assert out["pixel_values"].shape == (len(captions), 3, 32, 32) and out["noise"].shape == (len(captions), 16)
    assert int((out["itm_labels"] == 0).sum()) == len(captions) - len(captions) // 2


def test_processor_errors_name_the_problem(processor):
    with pytest.raises(ValueError, match="one caption per image"):
        processor(random_images(2), text=["only one"], return_tensors="pt")
    with pytest.raises(ValueError, match="needs both images and text"):
        processor(text=["a caption"], return_tensors="pt", for_pretraining=True)
    with pytest.raises(TypeError, match="unknown settings"):
        processor(random_images(1), text=["a"], padding_side="left")
    with pytest.raises(ValueError, match="empty texts"):
        processor(random_images(2), text=["fine", " "])
    only_text = processor(text=CAPTIONS, return_tensors="pt")
    assert set(only_text) == {"input_ids", "attention_mask"}


# -- the objectives by hand -----------------------------------------------------------------------------------------


def hand_patches(pixels, patch=8):
    batch, channels, height, width = pixels.shape
    grid = pixels.reshape(batch, channels, height // patch, patch, width // patch, patch)
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // patch) * (width // patch), -1)


def test_mim_mask_target_and_loss_by_hand(processor):
    torch.manual_seed(0)
    model = hf_mae.create_model("m3ae-tiny").eval()
    batch = batch_for(processor)
    out = model(**batch)
    # the kept patches are the int(16 * 0.25) = 4 with the smallest noise
    kept = batch["noise"].argsort(1)[:, :4]
    expected_mask = torch.ones(3, 16).scatter_(1, kept, 0.0)
    assert torch.equal(out.mask, expected_mask) and out.mask.sum().item() == 36
    # target: each patch's pixels normalised by its own mean and unbiased std (+1e-6 in the variance)
    patches = hand_patches(batch["pixel_values"])
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = ((out.logits - target) ** 2).mean(-1)
    torch.testing.assert_close(out.mim_loss, (per_patch * expected_mask).sum() / 36)
    # loss = 1 * MLM + 1 * MIM + 1 * ITM
    torch.testing.assert_close(out.loss, out.mlm_loss + out.mim_loss + out.itm_loss)


def test_each_objective_reads_its_fusion_layer(processor):
    """MIM decodes the image stream after mim_layer = 1 of the 2 fusion layers: the second layer cannot change it;
    MLM reads the last layer's text stream (the masked caption with the full image); ITM the pair feature of the
    caption with image itm_image_index."""
    torch.manual_seed(0)
    model = hf_mae.create_model("m3ae-tiny").eval()
    batch = batch_for(processor)
    out = model(**batch)
    with torch.no_grad():
        for p in model.m3ae.fusion_layers[1].parameters():
            p.add_(0.5)
    changed = model(**batch)
    assert torch.equal(changed.mim_loss, out.mim_loss) and torch.equal(changed.logits, out.logits)
    assert abs(changed.mlm_loss.item() - out.mlm_loss.item()) > 1e-3
    assert abs(changed.itm_loss.item() - out.itm_loss.item()) > 1e-4
    with torch.no_grad():
        for p in model.m3ae.fusion_layers[0].image_layer.parameters():
            p.add_(0.5)
    assert not torch.equal(model(**batch).logits, out.logits)

    torch.manual_seed(0)
    model = hf_mae.create_model("m3ae-tiny").eval()
    base = model.base_model
    with torch.no_grad():
        fused = base(batch["pixel_values"], batch["mlm_input_ids"], batch["attention_mask"]).text_last_hidden_state
        labelled = batch["mlm_labels"] != -100
        torch.testing.assert_close(out.mlm_logits, model.mlm_head(fused[labelled]), rtol=0, atol=1e-5)
        paired = base(batch["pixel_values"][batch["itm_image_index"]], batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(out.itm_logits, model.itm_head(paired.pooler_output), rtol=0, atol=1e-5)
        scores = model.pair_scores(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        own = model.itm_head(base(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]).pooler_output)
        torch.testing.assert_close(scores, own[:, 1] - own[:, 0])
        matrix = model.score_matrix(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(matrix.diagonal(), scores, rtol=0, atol=1e-5)
        other = model.pair_scores(batch["pixel_values"][:1].expand(2, -1, -1, -1), batch["input_ids"][1:],
                                  batch["attention_mask"][1:])  # image 0 with captions 1 and 2
        torch.testing.assert_close(matrix[0, 1:], other, rtol=0, atol=1e-5)


# -- by training ----------------------------------------------------------------------------------------------------

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (40, 40, 230), "yellow": (230, 220, 30)}
SHAPES = ("square", "circle", "triangle")


def shape_pairs(count, seed):
    """Images of one coloured shape on black (32 px) with captions "a <colour> <shape>": the colour word can only be
    told from the image (colour and shape are drawn independently)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:32, :32]
    images, captions = [], []
    for _ in range(count):
        colour, shape = list(COLOURS)[rng.integers(4)], SHAPES[rng.integers(3)]
        x, y, r = rng.integers(12, 20), rng.integers(12, 20), rng.integers(8, 12)
        if shape == "square":
            inside = (abs(cols - x) <= r) & (abs(rows - y) <= r)
        elif shape == "circle":
            inside = (cols - x) ** 2 + (rows - y) ** 2 <= r * r
        else:
            inside = (rows >= y - r) & (rows <= y + r) & (abs(cols - x) <= (rows - (y - r)) / 2)
        image = np.zeros((32, 32, 3), np.uint8)
        image[inside] = COLOURS[colour]
        images.append(image)
        captions.append(f"a {colour} {shape}")
    return images, captions


@pytest.fixture(scope="module")
def trained(processor):
    """m3ae-tiny trained for 120 steps of 32 pairs (AdamW 2e-3, 10 warm-up steps, cosine), the processor drawing
    each batch's MLM masks, MIM noise and ITM pairs (negatives: another colour). The text tower's 30,522-word
    embedding table is frozen: it is half of the optimiser's work, and the colour words must come from the image
    anyway. Returns (model, losses)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = M3AEForPreTraining(create_config("m3ae-tiny")).train()
    images, captions = shape_pairs(512, seed=0)
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    tokens = processor.tokenize(captions)
    model.m3ae.text_model.get_input_embeddings().weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    steps, losses = 120, []
    for step in range(steps):
        rows = torch.randint(0, 512, (32,), generator=generator)
        batch = {key: value[rows] for key, value in tokens.items()}
        draws = processor.pretraining_inputs(batch, generator, negative_groups=[captions[i].split()[1] for i in rows])
        out = model(pixel_values=pixels[rows], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    **draws)
        optimizer.zero_grad()
        out.loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.step()
        losses.append({"mlm": out.mlm_loss.item(), "mim": out.mim_loss.item(), "itm": out.itm_loss.item()})
    return model.eval(), losses


def colour_accuracy(model, processor, pixels, tokens):
    """Share of held-out captions whose colour word (position 2: [CLS] a <colour> <shape> [SEP]), masked, is
    predicted right."""
    ids = tokens["input_ids"]
    masked, labels = ids.clone(), torch.full_like(ids, -100)
    masked[:, 2], labels[:, 2] = processor.tokenizer.mask_token_id, ids[:, 2]
    with torch.no_grad():
        out = model(pixel_values=pixels, input_ids=ids, attention_mask=tokens["attention_mask"], mlm_input_ids=masked,
                    mlm_labels=labels)
    return (out.mlm_logits.argmax(-1) == ids[:, 2]).float().mean().item()


def test_mlm_names_the_colour_only_with_the_right_image(trained, processor):
    model, _ = trained
    images, captions = shape_pairs(128, seed=1)
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    tokens = processor.tokenize(captions)
    assert processor.tokenizer.convert_ids_to_tokens(tokens["input_ids"][0, 2].item()) == captions[0].split()[1]
    right = colour_accuracy(model, processor, pixels, tokens)
    shuffled = colour_accuracy(model, processor, pixels[torch.roll(torch.arange(128), 1)], tokens)
    print(f"colour-word MLM accuracy: right images {right:.3f}, shuffled images {shuffled:.3f} (chance 0.25)")
    # measured: 1.000 vs 0.227; stated: >= 0.85 with the right image, a gap of >= 0.5
    assert right >= 0.85 and right - shuffled >= 0.5


def test_mim_loss_falls(trained):
    _, losses = trained
    first = sum(r["mim"] for r in losses[:10]) / 10
    last = sum(r["mim"] for r in losses[-10:]) / 10
    print(f"MIM loss: first 10 steps {first:.3f}, last 10 steps {last:.3f}")
    assert last < 0.8 * first  # measured 1.00 -> ~0.60


def test_itm_tells_matched_from_mismatched_pairs(trained, processor):
    model, _ = trained
    images, captions = shape_pairs(256, seed=2)
    inputs = processor(images, text=captions, return_tensors="pt")
    labels, index = itm_pairs(256, 0.5, [c.split()[1] for c in captions], torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(**inputs, itm_labels=labels, itm_image_index=index)
    print(f"ITM accuracy on 256 held-out pairs (128 mismatched): {out.itm_accuracy.item():.3f} (chance 0.5)")
    # stated: >= 0.6, 3.2 standard deviations of a coin's accuracy on 256 pairs above chance (the slowest of the
    # three objectives to learn here: measured ~0.68 after these 120 steps, 0.88 after 150 steps with the table
    # trained)
    assert out.itm_accuracy.item() >= 0.6


# -- hf-mae pretrain end to end; data ---------------------------------------------------------------------------


def test_pretrain_cli_end_to_end_on_coco_mini(tmp_path, one_thread):
    coco = shared_data("coco-mini")
    argv = ["--model", "m3ae-tiny", "--dataset", str(coco), "--max-steps", "3", "--batch-size", "8", "--log-steps",
            "1", "--lr", "1e-3", "--report-to", "none"]
    records = run_pretrain(argv, tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3] and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    run = tmp_path / "run"
    model = AutoModelForPreTraining.from_pretrained(run).eval()
    processor = AutoProcessor.from_pretrained(run)
    assert type(model) is M3AEForPreTraining and type(processor).__name__ == "M3AEProcessor"
    assert (processor.num_patches, processor.max_length, processor.mlm_ratio) == (16, 32, 0.15)
    rows = load_image_text_dataset(coco, "train")
    assert len(rows) == 400 and len(set(rows["group"])) == 80  # 80 train images x 5 captions
    assert len(load_image_text_dataset(coco, "val")) == 395 and len(load_image_text_dataset(coco, "all")) == 795
    with pytest.raises(ValueError, match="no image-caption pairs"):
        load_image_text_dataset(coco, "test")


def test_class_name_captions_of_an_image_folder():
    cifar = shared_data("cifar10")
    rows = load_image_text_dataset(cifar, "test")
    assert len(rows) == 1000 and sorted(set(rows["group"]))[:2] == ["airplane", "automobile"]
    row = rows[0]
    assert row["text"] == CAPTION_TEMPLATE.format(label=row["group"]) == "a photo of a airplane."


# -- towers ---------------------------------------------------------------------------------------------------------


def test_towers_by_instance_name_and_family(tmp_path, processor):
    config = create_config("m3ae-tiny")
    vit = ViTModel(ViTConfig(**{k: v for k, v in config.vision_config.items() if k != "model_type"}))
    text = BertModel(BertConfig(**{k: v for k, v in TINY_BERT_CONFIG.items() if k != "model_type"}))
    model = M3AEForPreTraining(config, vision_model=vit, text_model=text)
    assert torch.equal(model.m3ae.vision_model.embeddings.cls_token, vit.embeddings.cls_token)
    assert torch.equal(model.m3ae.text_model.embeddings.word_embeddings.weight, text.embeddings.word_embeddings.weight)
    # a named text tower: its weights warm-start a fresh build, never a from_pretrained of the saved model
    text.save_pretrained(tmp_path / "bert")
    named = M3AEModel(create_config("m3ae-tiny", text_name_or_path=str(tmp_path / "bert")))
    assert torch.equal(named.text_model.embeddings.word_embeddings.weight, text.embeddings.word_embeddings.weight)
    named.save_pretrained(tmp_path / "m3ae")
    (tmp_path / "bert" / "model.safetensors").unlink()
    reloaded = M3AEModel.from_pretrained(tmp_path / "m3ae")
    assert torch.equal(reloaded.text_model.embeddings.word_embeddings.weight, text.embeddings.word_embeddings.weight)

    batch = batch_for(processor)
    # a CLIP vision tower and an hf-mae MAE encoder mask the same way (the smallest noise kept)
    clip = dict(model_type="clip_vision_model", image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=2)
    mae = dict(model_type="mae", image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
               num_hidden_layers=1, num_attention_heads=2, decoder_hidden_size=32, decoder_num_hidden_layers=1,
               decoder_num_attention_heads=2, decoder_intermediate_size=64)
    for vision in (clip, mae):
        torch.manual_seed(0)
        model = hf_mae.create_model("m3ae-tiny", vision_config=vision).eval()
        out = model(**batch)
        assert torch.isfinite(out.loss) and torch.equal(out.mask, torch.ones(3, 16).scatter_(
            1, batch["noise"].argsort(1)[:, :4], 0.0))
        tokens, _, _ = model.m3ae.encode_image(batch["pixel_values"], batch["noise"], 0.75)
        assert tokens.shape == (3, 5, 32)
    with pytest.raises(TypeError, match="ViT-family"):
        hf_mae.create_model("m3ae-tiny", vision_config=dict(TINY_BERT_CONFIG))


def test_classification_heads_by_hand(processor):
    torch.manual_seed(0)
    vqa = hf_mae.create_model("m3ae-tiny", task="visual-question-answering", num_labels=4).eval()
    inputs = processor(random_images(3), text=CAPTIONS, return_tensors="pt")
    soft = torch.tensor([[1.0, 0.0, 0.3, 0.0], [0.0, 0.0, 0.0, 0.6], [0.0, 1.0, 0.0, 0.0]])
    out = vqa(**inputs, labels=soft)
    p = torch.sigmoid(out.logits)
    # the official VQA loss: binary cross-entropy with logits, mean over every entry, times the number of answers
    by_hand = -(soft * p.log() + (1 - soft) * (1 - p).log()).mean() * 4
    torch.testing.assert_close(out.loss, by_hand, rtol=1e-5, atol=1e-6)
    classifier = hf_mae.create_model("m3ae-tiny", task="image-classification", num_labels=4).eval()
    out = classifier(**inputs, labels=torch.tensor([0, 3, 1]))
    log_p = out.logits.log_softmax(-1)
    torch.testing.assert_close(out.loss, -(log_p[0, 0] + log_p[1, 3] + log_p[2, 1]) / 3)
    assert out.logits.shape == (3, 4) and out.pooler_output.shape == (3, 128)
