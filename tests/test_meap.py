"""MEAP (Zhuang et al., ICML 2025): the mask positions, the unmasked targets, the SFT labels, the [MASK] transform,
saving the plain LM, and the CLI."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from hf_mae import registry
from hf_mae.modeling.masking import step_seeded_positions
from hf_mae.modeling.meap import (
    IGNORE_INDEX,
    TINY_LM,
    MEAPConfig,
    MEAPForCausalLM,
    MEAPProcessor,
    add_mask_token,
    byte_level_tokenizer,
    meap_sft_examples,
    meap_transform,
)

MINILM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "models" / "all-MiniLM-L6-v2" / "model"
if not MINILM.is_dir():
    MINILM = Path("/work/shared/data/models/all-MiniLM-L6-v2/model")


def tiny_model(**overrides) -> MEAPForCausalLM:
    return registry.create_model("meap-tiny", **overrides)


def batch(seed=0, batch_size=3, length=40):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 259, (batch_size, length), generator=generator)


class RecordIds:
    """Records the token ids the LM's embedding layer receives."""

    def __init__(self, model):
        self.ids = []
        model.get_input_embeddings().register_forward_hook(lambda module, args, out: self.ids.append(args[0].clone()))


# ------------------------------------------------------------------------------------------------ positions


@pytest.mark.parametrize("length, ratio, count", [(40, 0.1, 4), (37, 0.1, 3), (5, 0.1, 1), (100, 0.15, 15),
                                                  (2, 0.1, 1), (4096, 0.1, 409)])
def test_positions_count_range_and_reproducible(length, ratio, count):
    positions = step_seeded_positions(length, ratio, seed=7)
    assert positions.tolist() == sorted(set(positions.tolist()))  # distinct, sorted
    assert len(positions) == count == max(1, int(length * ratio))
    assert positions.min() >= 0 and positions.max() < length - 1  # drawn from [0, L - 1)
    assert torch.equal(positions, step_seeded_positions(length, ratio, seed=7))


def test_positions_differ_between_seeds_and_cover_the_range():
    draws = [set(step_seeded_positions(100, 0.1, seed).tolist()) for seed in range(200)]
    assert sum(draws[0] != other for other in draws[1:]) >= 198  # 10 of 99: a repeat is a ~1e-13 event
    hits = torch.zeros(100)
    for draw in draws:
        hits[list(draw)] += 1
    assert hits[99] == 0  # the last position is never drawn
    # uniform over 99 positions: 2000 draws, 20.2 expected per position; every one drawn, none more than 3x
    assert hits[:99].min() >= 1 and hits[:99].max() <= 61


def test_positions_edge_cases_and_bad_input():
    assert step_seeded_positions(1, 0.1, 0).numel() == 0
    assert step_seeded_positions(50, 0.0, 0).numel() == 0
    with pytest.raises(ValueError, match="mask_ratio"):
        step_seeded_positions(50, 1.0, 0)
    with pytest.raises(ValueError, match="length"):
        step_seeded_positions(-1, 0.1, 0)
    with pytest.raises(TypeError, match="seed"):
        step_seeded_positions(10, 0.1, 1.5)


# ------------------------------------------------------------------------------------------------ pre-training


def test_pretrain_masks_the_same_positions_in_every_sequence_and_keeps_the_targets():
    model = tiny_model().train()
    recorder = RecordIds(model.lm)
    ids = batch()
    model.after_optimizer_step(5)
    out = model(input_ids=ids)
    fed = recorder.ids[-1]
    expected = step_seeded_positions(40, 0.1, seed=5)  # mask_seed 0 + step 5
    masked_columns = (fed == 259).all(dim=0).nonzero().flatten()
    assert torch.equal(masked_columns, expected) and len(expected) == 4
    assert not (fed == 259).any(dim=0)[~out.mask[0].bool()].any()  # nothing else masked
    keep = torch.ones(40, dtype=torch.bool)
    keep[expected] = False
    assert torch.equal(fed[:, keep], ids[:, keep])
    assert torch.equal(out.mask, torch.zeros(3, 40).index_fill_(1, expected, 1.0))
    # the targets are the original tokens: the loss is the plain shifted CE of the logits against ``ids``
    manual = F.cross_entropy(out.logits[:, :-1].reshape(-1, 260), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, manual)
    # ... and the inputs really were masked: the unmasked forward scores differently
    with torch.no_grad():
        plain = model.lm(input_ids=ids, labels=ids).loss
    assert abs(plain.item() - out.loss.item()) > 1e-4


def test_positions_follow_the_optimiser_step_and_are_reproducible():
    first, second = tiny_model().train(), tiny_model().train()
    recorders = RecordIds(first.lm), RecordIds(second.lm)
    ids = batch()
    for step in (0, 1, 2, 1):
        for model in (first, second):
            model.after_optimizer_step(step)
            model(input_ids=ids)
        assert torch.equal(recorders[0].ids[-1], recorders[1].ids[-1])
        columns = (recorders[0].ids[-1] == 259).all(dim=0).nonzero().flatten()
        assert torch.equal(columns, step_seeded_positions(40, 0.1, seed=step))
    # two forwards at one step (gradient accumulation) mask the same columns; different steps differ
    assert torch.equal(recorders[0].ids[1], recorders[0].ids[3])
    assert not torch.equal(recorders[0].ids[0], recorders[0].ids[1])


def test_without_the_hook_every_training_forward_is_a_step_and_the_cycle_repeats():
    model = tiny_model().train()
    recorder = RecordIds(model.lm)
    ids = batch()
    for _ in range(3):
        model(input_ids=ids)
    for step, fed in enumerate(recorder.ids):
        assert torch.equal((fed == 259).all(dim=0).nonzero().flatten(), step_seeded_positions(40, 0.1, step))
    cycled = tiny_model(mask_seed=50, mask_seed_cycle=51)
    assert torch.equal(cycled.mask_positions_for(40, step=3), cycled.mask_positions_for(40, step=54))
    assert torch.equal(cycled.mask_positions_for(40, step=3), step_seeded_positions(40, 0.1, 53))


def test_eval_mode_and_padding():
    model = tiny_model()
    ids = batch()
    model.eval()
    recorder = RecordIds(model.lm)
    out = model(input_ids=ids)
    assert out.mask is None and not (recorder.ids[-1] == 259).any()
    torch.testing.assert_close(out.logits, model.lm(input_ids=ids).logits)
    # padding: the default labels ignore padded positions
    attention = torch.ones_like(ids)
    attention[0, 30:] = 0
    model.train()
    model.after_optimizer_step(0)
    out = model(input_ids=ids, attention_mask=attention)
    labels = ids.clone()
    labels[0, 30:] = IGNORE_INDEX
    manual = F.cross_entropy(out.logits[:, :-1].reshape(-1, 260), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, manual)


def test_explicit_positions_mask_in_any_mode():
    model = tiny_model(mode="sft").eval()
    ids = batch()
    out = model(input_ids=ids, mask_positions=torch.tensor([0, 7, 8]))
    assert out.mask.sum().item() == 9 and out.mask[:, [0, 7, 8]].all()
    # SFT mode in training: no masking by the model
    model.train()
    recorder = RecordIds(model.lm)
    labels = ids.clone()
    labels[:, :20] = IGNORE_INDEX
    out = model(input_ids=ids, labels=labels)
    assert out.mask is None and torch.equal(recorder.ids[-1], ids)
    torch.testing.assert_close(out.loss, model.lm(input_ids=ids, labels=labels).loss)


# ------------------------------------------------------------------------------------------------ SFT


def test_sft_examples_by_hand():
    prompt, answer = [10, 11, 12], list(range(100, 160))  # 60 answer tokens > 50
    plain, masked = meap_sft_examples(prompt, answer, mask_token_id=259, eos_token_id=2, mask_ratio=0.1,
                                      rng=random.Random(3))
    assert plain["input_ids"] == prompt + answer + [2]
    assert plain["labels"] == [-100] * 3 + answer + [2]
    assert plain["attention_mask"] == [1] * 64
    expected = random.Random(3).sample(range(3, 63), 6)  # int(60 * 0.1) answer positions
    assert len(set(expected)) == 6
    assert len(masked["input_ids"]) == 64 and masked["input_ids"][-1] == 2 and masked["labels"][-1] == -100
    for position in range(63):
        original = (prompt + answer)[position]
        if position in expected:
            assert masked["input_ids"][position] == 259 and masked["labels"][position] == original
        else:
            assert masked["input_ids"][position] == original and masked["labels"][position] == -100
    assert sum(label != -100 for label in masked["labels"]) == 6  # labels only at masked positions


def test_sft_short_answer_and_truncation():
    # an answer of exactly 50 tokens gets no masked copy (the official `> 50`)
    assert len(meap_sft_examples([5], list(range(50, 100)), mask_token_id=259, eos_token_id=2)) == 1
    prompt, answer = list(range(10, 14)), list(range(100, 160))
    plain, masked = meap_sft_examples(prompt, answer, mask_token_id=259, eos_token_id=2, max_length=20,
                                      rng=random.Random(0))
    assert plain["input_ids"] == prompt + answer[:15] + [2] and plain["labels"] == [-100] * 4 + answer[:15] + [2]
    # masked copy: (prompt + answer)[:19] + EOS; int((19 - 4) * 0.1) = 1 -> max(1, 1) answer position masked
    assert len(masked["input_ids"]) == 20 and masked["input_ids"].count(259) == 1
    position = masked["input_ids"].index(259)
    assert 4 <= position < 19 and masked["labels"][position] == (prompt + answer)[position]
    with pytest.raises(ValueError, match="answer_ids"):
        meap_sft_examples([1], [], mask_token_id=259, eos_token_id=2)
    with pytest.raises(TypeError, match="prompt_ids"):
        meap_sft_examples(["a"], [1], mask_token_id=259, eos_token_id=2)


# ------------------------------------------------------------------------------------------------ the transform


def test_mask_token_added_and_embeddings_grow_by_exactly_one_row():
    tokenizer = byte_level_tokenizer()
    assert len(tokenizer) == 259 and tokenizer.mask_token is None
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, tie_word_embeddings=False))
    before_in = lm.get_input_embeddings().weight.detach().clone()
    before_out = lm.get_output_embeddings().weight.detach().clone()
    assert meap_transform(lm, tokenizer) == 259
    assert tokenizer.mask_token == "[MASK]" and len(tokenizer) == 260
    assert lm.get_input_embeddings().weight.shape == (260, 32) and lm.get_output_embeddings().weight.shape == (260, 32)
    assert torch.equal(lm.get_input_embeddings().weight[:259], before_in)
    assert torch.equal(lm.get_output_embeddings().weight[:259], before_out)
    assert lm.config.vocab_size == 260
    assert tokenizer("a[MASK]b", add_special_tokens=False)["input_ids"] == [100, 259, 101]
    # a second call adds nothing
    assert meap_transform(lm, tokenizer) == 259 and lm.get_input_embeddings().weight.shape[0] == 260
    # a padded vocabulary with room keeps its size
    roomy = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2))
    assert meap_transform(roomy, byte_level_tokenizer()) == 259 and roomy.get_input_embeddings().weight.shape[0] == 300


@pytest.mark.skipif(not MINILM.is_dir(), reason=f"the MiniLM tokenizer is not at {MINILM}")
def test_a_tokenizer_with_a_mask_token_keeps_it():
    tokenizer = AutoTokenizer.from_pretrained(str(MINILM))
    size = len(tokenizer)
    assert add_mask_token(tokenizer) == 0 and tokenizer.mask_token_id == 103 and len(tokenizer) == size


def test_preset_mask_id_matches_its_tokenizer():
    processor = registry.create_processor("meap-tiny")
    config = registry.create_config("meap-tiny")
    assert processor.mask_token_id == config.mask_token_id == 259
    assert config.lm_config["vocab_size"] == len(processor.tokenizer) == 260
    assert TINY_LM["vocab_size"] == 260


# ------------------------------------------------------------------------------------------------ saving


def test_save_lm_loads_as_a_plain_transformers_lm(tmp_path):
    model = tiny_model().eval()
    processor = registry.create_processor("meap-tiny")
    model.save_lm(tmp_path / "lm", tokenizer=processor.tokenizer)
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")
    assert type(lm) is LlamaForCausalLM and tokenizer.mask_token_id == 259 and len(tokenizer) == 260
    ids = processor(["To be, or not to be", "that is the question"])
    torch.testing.assert_close(lm.eval()(**ids).logits, model(**ids).logits)
    # the hf-mae checkpoint reloads through the Auto class too
    model.save_pretrained(tmp_path / "meap")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "meap").eval()
    assert type(again) is MEAPForCausalLM
    torch.testing.assert_close(again(**ids).logits, model(**ids).logits)


def test_from_a_pretrained_lm_folder_adds_the_mask(tmp_path):
    torch.manual_seed(1)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    lm.save_pretrained(tmp_path / "base")
    byte_level_tokenizer().save_pretrained(tmp_path / "base")
    model = MEAPForCausalLM(MEAPConfig(lm_name_or_path=str(tmp_path / "base")))
    assert model.config.mask_token_id == 259 and model.lm.get_input_embeddings().weight.shape[0] == 260
    assert torch.equal(model.lm.get_input_embeddings().weight[:259], lm.get_input_embeddings().weight)
    assert model.config.lm_config["vocab_size"] == 260
    model.save_pretrained(tmp_path / "run")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    assert torch.equal(reloaded.lm.get_input_embeddings().weight, model.lm.get_input_embeddings().weight)


def test_tied_embeddings_save_and_load(tmp_path):
    model = tiny_model(lm_config=dict(TINY_LM, tie_word_embeddings=True))
    assert model.lm.get_output_embeddings().weight is model.lm.get_input_embeddings().weight
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.lm.get_output_embeddings().weight is again.lm.get_input_embeddings().weight
    assert torch.equal(again.lm.get_input_embeddings().weight, model.lm.get_input_embeddings().weight)


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="mode"):
        MEAPConfig(lm_config=TINY_LM, mode="mlm")
    with pytest.raises(ValueError, match="mask_ratio"):
        MEAPConfig(lm_config=TINY_LM, mask_ratio=1.0)
    with pytest.raises(ValueError, match="lm_config"):
        MEAPConfig(lm_config={"hidden_size": 8})
    with pytest.raises(ValueError, match="lm_name_or_path"):
        MEAPForCausalLM(MEAPConfig(mask_token_id=3))
    with pytest.raises(ValueError, match="mask_token_id"):
        MEAPForCausalLM(MEAPConfig(lm_config=dict(TINY_LM, vocab_size=100), mask_token_id=259))
    with pytest.raises(TypeError, match="lm must be"):
        MEAPForCausalLM(MEAPConfig(lm_config=TINY_LM, mask_token_id=259), lm=torch.nn.Linear(2, 2))
    processor = MEAPProcessor(byte_level_tokenizer(), max_length=16)
    with pytest.raises(TypeError, match="text must be"):
        processor([1, 2])
    with pytest.raises(ValueError, match="empty"):
        processor(["fine", ""])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoded = processor(["x" * 40, "short"])
    assert encoded["input_ids"].shape == (2, 16) and any("truncated" in str(w.message) for w in caught)


def test_a_saved_model_keeps_its_own_weights_not_the_named_lm(tmp_path):
    torch.manual_seed(2)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    base.save_pretrained(tmp_path / "base")
    byte_level_tokenizer().save_pretrained(tmp_path / "base")
    model = MEAPForCausalLM(MEAPConfig(lm_name_or_path=str(tmp_path / "base")))
    assert model.warm_start_info["missing_keys"] == []
    with torch.no_grad():
        model.lm.get_input_embeddings().weight.add_(1.0)  # "training"
    model.save_pretrained(tmp_path / "run")
    reloaded = MEAPForCausalLM.from_pretrained(tmp_path / "run")
    assert reloaded.warm_start_info is None
    assert torch.equal(reloaded.lm.get_input_embeddings().weight, model.lm.get_input_embeddings().weight)


# ------------------------------------------------------------------------------------------------ the CLI

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text" / "tinyshakespeare.txt"
if not SHAKESPEARE.is_file():
    SHAKESPEARE = Path("/work/shared/data/text/tinyshakespeare.txt")


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"Tiny Shakespeare is not at {SHAKESPEARE}")
def test_pretrain_end_to_end_on_tiny_shakespeare(tmp_path):
    from hf_mae.training.pretrain import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder, summary = main(["--model", "meap-tiny", "--dataset", str(SHAKESPEARE), "--max-steps", "30",
                                "--batch-size", "16", "--log-steps", "5", "--output-dir", str(tmp_path / "run")])
        streamed, streamed_summary = main(["--model", "meap-tiny", "--dataset", str(SHAKESPEARE), "--streaming",
                                           "--max-steps", "4", "--batch-size", "8",
                                           "--output-dir", str(tmp_path / "stream")])
    finally:
        torch.set_num_threads(threads)
    # from log(260) = 5.56 at the start; observed 5.47 (steps 1-5) -> 4.88 (steps 26-30)
    assert summary["first_loss"] > 5.2 and summary["final_loss"] < summary["first_loss"] - 0.3, summary
    assert streamed_summary["steps"] == 4 and (streamed / "lm" / "model.safetensors").is_file()
    # RUN/lm is a plain Llama with the tokenizer and its [MASK]; it computes what the run's MEAP model computes
    lm = AutoModelForCausalLM.from_pretrained(folder / "lm").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "lm")
    assert type(lm) is LlamaForCausalLM and tokenizer.mask_token == "[MASK]" and tokenizer.mask_token_id == 259
    assert "processor_class" not in json.loads((folder / "lm" / "tokenizer_config.json").read_text())
    run = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer(["First Citizen:", "Before we proceed any further, hear me speak."], return_tensors="pt",
                    padding=True)
    torch.testing.assert_close(lm(**ids).logits, run(**ids).logits)
