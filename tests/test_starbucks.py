"""Starbucks mechanisms with numbers: the sliced MLM head against a hand-built head of d inputs, SMAE's per-pair
MLM and MAE losses recomputed by hand, each pair's losses falling in a short pre-training, the SRL loss recomputed
by hand on a tiny batch, and SRL fine-tuning raising every sub-embedding's retrieval accuracy. Tiny random BERTs over
the real MiniLM vocabulary, CPU, fp32; nothing is downloaded."""

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

import hf_mae
from hf_mae.modeling.starbucks import (
    StarbucksConfig,
    StarbucksForPreTraining,
    StarbucksModel,
    StarbucksDecoder,
    check_layer_dim_pairs,
    mlm_head_transform,
    sliced_mlm_logits,
    sliced_transform,
    smae_pair_losses,
)

from conftest import run_pretrain, shared_data

PAIRS = [(1, 16), (2, 32), (3, 48), (4, 64)]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(shared_data("models/all-MiniLM-L6-v2/model"))


def tiny_bert_config(tokenizer, **overrides):
    settings = dict(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=64, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    return BertConfig(**{**settings, **overrides})


def shakespeare_lines(count, start=0):
    text = shared_data("text/tinyshakespeare.txt").read_text()
    lines = [line.strip() for line in text.splitlines() if len(line.split()) >= 6]
    return lines[start:start + count]


# ---------------------------------------------------------------------------------------------------------------
# The sliced head


def test_sliced_head_equals_a_hand_built_head_of_d_inputs(tokenizer):
    model = BertForMaskedLM(tiny_bert_config(tokenizer)).eval()
    transform = mlm_head_transform(model)
    hidden = torch.randn(2, 5, 64)
    for dim in (16, 40, 64):
        # a head of dim inputs: its dense layer holds the first dim columns of the shared one, the rest is shared
        dense = nn.Linear(dim, 64)
        with torch.no_grad():
            dense.weight.copy_(transform.dense.weight[:, :dim])
            dense.bias.copy_(transform.dense.bias)
        by_hand = model.cls.predictions.decoder(transform.LayerNorm(F.gelu(dense(hidden[..., :dim]))))
        sliced = sliced_mlm_logits(model, hidden[..., :dim])
        assert sliced.shape == (2, 5, tokenizer.vocab_size)
        assert torch.allclose(sliced, by_hand, atol=1e-5)
    # at the full width the sliced head is BERT's own head
    assert torch.allclose(sliced_mlm_logits(model, hidden), model.cls(hidden), atol=1e-5)
    # a d-dim slice trains only the first d input columns of the dense layer
    sliced_transform(transform, hidden[..., :16]).sum().backward()
    grad = transform.dense.weight.grad
    assert grad[:, :16].abs().sum() > 0 and grad[:, 16:].abs().sum() == 0


def test_sliced_head_refuses_a_head_of_another_layout():
    with pytest.raises(TypeError, match="cls.predictions.transform.dense"):
        mlm_head_transform(nn.Linear(2, 2))
    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=8))
    with pytest.raises(ValueError, match="at most 8 dims"):
        sliced_transform(mlm_head_transform(model), torch.zeros(1, 9))


# ---------------------------------------------------------------------------------------------------------------
# SMAE's losses


def corrupted(ids, mask, mask_id):
    """The masked positions replaced by [MASK] (no 80/10/10, so the hand computation is exact), labels there."""
    return ids.masked_fill(mask, mask_id), ids.masked_fill(~mask, -100)


def test_smae_pair_losses_by_hand(tokenizer):
    model = BertForMaskedLM(tiny_bert_config(tokenizer)).eval()
    decoder = StarbucksDecoder(model.config, model.bert.encoder.layer[0]).eval()
    # the decoder starts as a copy of the encoder's first layer, not the same parameters
    first = dict(model.bert.encoder.layer[0].named_parameters())
    for name, parameter in decoder.layer.named_parameters():
        assert torch.equal(parameter, first[name]) and parameter.data_ptr() != first[name].data_ptr()
    batch = tokenizer(["the quick brown fox jumps over the lazy dog", "to be or not to be"], padding=True,
                      return_tensors="pt")
    ids, attention = batch.input_ids, batch.attention_mask
    generator = torch.Generator().manual_seed(0)
    ordinary = attention.bool() & (ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id)
    noise = torch.rand(ids.shape, generator=generator)
    decoder_mask = ordinary & (noise < 0.6)
    encoder_mask = ordinary & (noise < 0.3)  # nested: a subset of the decoder's
    enc_ids, labels = corrupted(ids, encoder_mask, tokenizer.mask_token_id)
    dec_ids, decoder_labels = corrupted(ids, decoder_mask, tokenizer.mask_token_id)
    losses, hidden_states = smae_pair_losses(model, decoder, PAIRS, enc_ids, attention, labels, dec_ids,
                                             decoder_labels)
    assert losses.shape == (len(PAIRS), 2)
    assert len(hidden_states) == 5

    states = model.bert(enc_ids, attention_mask=attention, output_hidden_states=True).hidden_states
    transform = model.cls.predictions.transform
    extended = (1.0 - attention[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for (layer, dim), (mlm, mae) in zip(PAIRS, losses):
        sub = states[layer][..., :dim]
        # MLM: every position through a dim-input head, CrossEntropyLoss ignoring -100
        dense = nn.Linear(dim, 64)
        with torch.no_grad():
            dense.weight.copy_(transform.dense.weight[:, :dim])
            dense.bias.copy_(transform.dense.bias)
        head_hidden = transform.LayerNorm(F.gelu(dense(sub)))
        logits = model.cls.predictions.decoder(head_hidden)
        expected_mlm = nn.CrossEntropyLoss()(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        assert mlm.item() == pytest.approx(expected_mlm.item(), rel=1e-5)
        # MAE: the decoder ids' embeddings with position 0 replaced by the sliced transform of the sub [CLS]
        embeddings = model.bert.embeddings(input_ids=dec_ids).clone()
        embeddings[:, 0] = head_hidden[:, 0]
        decoded = decoder.layer(embeddings, extended)
        mae_logits = model.cls(decoded)
        expected_mae = nn.CrossEntropyLoss()(mae_logits.reshape(-1, mae_logits.shape[-1]), decoder_labels.reshape(-1))
        assert mae.item() == pytest.approx(expected_mae.item(), rel=1e-5)
    # each sub-model's [CLS] gives its own MAE loss
    assert len(set(losses[:, 1].tolist())) == len(PAIRS)


def test_each_pairs_losses_fall_in_a_short_pretraining(tokenizer):
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config(tokenizer))
    decoder = StarbucksDecoder(model.config, model.bert.encoder.layer[0])
    lines = shakespeare_lines(256)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(decoder.parameters()), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for step in range(25):
        batch = tokenizer(lines[(step * 8) % 256:(step * 8) % 256 + 8], padding=True, truncation=True,
                          max_length=24, return_tensors="pt")
        ids, attention = batch.input_ids, batch.attention_mask
        ordinary = attention.bool() & (ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id)
        noise = torch.rand(ids.shape, generator=generator)
        enc_ids, labels = corrupted(ids, ordinary & (noise < 0.2), tokenizer.mask_token_id)
        dec_ids, decoder_labels = corrupted(ids, ordinary & (noise < 0.4), tokenizer.mask_token_id)
        losses, _ = smae_pair_losses(model, decoder, PAIRS, enc_ids, attention, labels, dec_ids, decoder_labels)
        loss = (losses.sum(dim=1) / 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(losses.detach())
    first, last = torch.stack(history[:5]).mean(0), torch.stack(history[-5:]).mean(0)
    # from ln(30522) = 10.3 every pair's MLM and MAE loss falls by more than 2 nats in 25 steps (measured: ~2.5)
    assert (first > 9.5).all(), first
    assert (first - last > 2.0).all(), (first, last)


# ---------------------------------------------------------------------------------------------------------------
# Config


def test_config_checks_pairs_and_ratios():
    config = StarbucksConfig()
    assert config.layer_dim_pairs == [[2, 32], [4, 64], [6, 128], [8, 256], [10, 512], [12, 768]]
    assert (config.encoder_mask_ratio, config.decoder_mask_ratio) == (0.2, 0.4)
    with pytest.raises(ValueError, match="must not exceed decoder_mask_ratio"):
        StarbucksConfig(encoder_mask_ratio=0.5, decoder_mask_ratio=0.4)
    with pytest.raises(ValueError, match="layer_dim_pairs.*int >= 1"):
        StarbucksConfig(layer_dim_pairs=[(0, 32)])
    with pytest.raises(ValueError, match="pair twice"):
        StarbucksConfig(layer_dim_pairs=[(2, 32), (2, 32)])
    with pytest.raises(ValueError, match="pooling"):
        StarbucksConfig(pooling="max")
    # the pairs are checked against the backbone described
    with pytest.raises(ValueError, match="exceeds the backbone's 2 layers"):
        StarbucksConfig(encoder_config=dict(model_type="bert", num_hidden_layers=2, hidden_size=64,
                                            num_attention_heads=2), layer_dim_pairs=[(3, 16)])
    with pytest.raises(ValueError, match="exceeds the backbone's 4 layers"):
        check_layer_dim_pairs("layer_dim_pairs", [(5, 8)], num_layers=4, hidden_size=64)
    with pytest.raises(ValueError, match="exceeds the backbone's hidden size 64"):
        check_layer_dim_pairs("layer_dim_pairs", [(4, 65)], num_layers=4, hidden_size=64)


# ---------------------------------------------------------------------------------------------------------------
# SRL fine-tuning


def tiny_sentence_transformer(tokenizer, tmp_path, seed=0, **overrides):
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    BertModel(tiny_bert_config(tokenizer, **overrides)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return SentenceTransformer(str(tmp_path), device="cpu")  # mean pooling over a plain BertModel folder


def test_srl_loss_by_hand(tokenizer, tmp_path):
    from hf_mae.training.starbucks_srl import StarbucksSRLLoss, srl_loss

    model = tiny_sentence_transformer(tokenizer, tmp_path)
    model.eval()
    anchors, positives = ["a cat sat on the mat", "dogs run fast", "the sun is hot"], ["cat mat", "dogs", "sun"]
    features = [model.preprocess(anchors), model.preprocess(positives)]
    pairs = [(1, 16), (2, 32), (3, 48)]  # the full model (4, 64) is added as the teacher
    loss_fn = StarbucksSRLLoss(model, pairs, scale=20.0, kl_weight=0.7, kl_temperature=0.1)
    loss = loss_fn(features, None)

    bert = model[0].auto_model

    def embed(texts, layer, dim):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        states = bert(**batch, output_hidden_states=True).hidden_states[layer]
        weights = batch.attention_mask.unsqueeze(-1).float()
        pooled = (states * weights).sum(1) / weights.sum(1)
        return F.normalize(pooled[:, :dim], dim=-1)

    def scores(layer, dim):
        return embed(anchors, layer, dim) @ embed(positives, layer, dim).T

    def cross_entropy(logits):  # -mean_i log softmax(logits)_ii
        return -(logits.diagonal() - logits.exp().sum(1).log()).mean()

    full = scores(4, 64)
    teacher = (full / 0.1).softmax(1)
    expected = cross_entropy(20 * full)
    for layer, dim in pairs:
        s = scores(layer, dim)
        student = (s / 0.1).softmax(1)
        kl = (teacher * (teacher.log() - student.log())).sum(1).mean()
        expected = expected + cross_entropy(20 * s) + 0.7 * kl
        assert loss_fn.last_terms[(layer, dim)] == pytest.approx((cross_entropy(20 * s) + 0.7 * kl).item(), rel=1e-4)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    # the KL's teacher is detached: a sub-model's term sends no gradient into the full model's scores
    full_scores = torch.randn(3, 3, requires_grad=True)
    sub_scores = torch.randn(3, 3, requires_grad=True)
    _, terms = srl_loss({(4, 64): full_scores, (1, 16): sub_scores}, (4, 64), kl_weight=1.0)
    terms[(1, 16)].backward()
    assert full_scores.grad is None and sub_scores.grad.abs().sum() > 0
    assert StarbucksSRLLoss(model, [(1, 16), (4, 64)]).pairs == [(4, 64), (1, 16)]
    with pytest.raises(ValueError, match="outside|exceeds"):
        StarbucksSRLLoss(model, [(5, 16)])
    with pytest.raises(ValueError, match="scale must be a positive number"):
        StarbucksSRLLoss(model, pairs, scale=0)
    with pytest.raises(ValueError, match="kl_temperature"):
        StarbucksSRLLoss(model, pairs, kl_temperature=-1.0)


def span_pairs(count, seed=0):
    """(8-word span, the passage without it) pairs from the msmarco-5k corpus: an inverse-cloze task."""
    import json
    import random

    rng = random.Random(seed)
    pairs = []
    with open(shared_data("beir/msmarco-5k/corpus.jsonl")) as f:
        for line in f:
            words = json.loads(line)["text"].split()
            if len(words) >= 20:
                i = rng.randrange(0, len(words) - 8)
                pairs.append((" ".join(words[i:i + 8]), " ".join(words[:i] + words[i + 8:])))
            if len(pairs) == count:
                return pairs
    return pairs


def test_srl_trains_every_pair(tokenizer, tmp_path):
    from hf_mae.training.starbucks_srl import StarbucksSRLLoss

    model = tiny_sentence_transformer(tokenizer, tmp_path, max_position_embeddings=64)
    model.max_seq_length = 48
    pairs = span_pairs(1200)
    train, held_out = pairs[:-128], pairs[-128:]
    loss_fn = StarbucksSRLLoss(model, PAIRS)

    def accuracy():  # top-1 of each held-out span among the 128 held-out passages, per sub-embedding
        model.eval()
        with torch.no_grad():
            queries = loss_fn.pair_embeddings(model.preprocess([q for q, _ in held_out]))
            passages = loss_fn.pair_embeddings(model.preprocess([p for _, p in held_out]))
        model.train()
        target = torch.arange(len(held_out))
        return {pair: ((F.normalize(queries[pair], dim=-1) @ F.normalize(passages[pair], dim=-1).T).argmax(1)
                       == target).float().mean().item() for pair in PAIRS}

    before = accuracy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(50):
        batch = train[(step * 32) % len(train):][:32]
        features = [model.preprocess([q for q, _ in batch]), model.preprocess([p for _, p in batch])]
        loss = loss_fn(features)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = accuracy()
    # chance is 1/128; every sub-embedding, the 16-d one of layer 1 included, gains at least 5 points (measured:
    # from 2-9% to 12-20%)
    for pair in PAIRS:
        assert after[pair] - before[pair] >= 0.05, (pair, before, after)


def test_srl_terms_match_sentence_transformers_losses(tokenizer, tmp_path):
    """Parity: SRL's cross-entropy at the full model is sentence-transformers' MultipleNegativesRankingLoss, and at
    (last layer, d) its MatryoshkaLoss at d, to float precision."""
    from sentence_transformers.sentence_transformer import losses

    from hf_mae.training.starbucks_srl import StarbucksSRLLoss

    model = tiny_sentence_transformer(tokenizer, tmp_path)
    model.eval()
    columns = [["a cat sat on the mat", "dogs run fast", "the sun is hot"], ["cat mat", "dogs", "sun"],
               ["a dog barked", "cats sleep", "it rains"]]  # with one hard negative per anchor
    features = lambda: [model.preprocess(texts) for texts in columns]  # noqa: E731
    mnrl = losses.MultipleNegativesRankingLoss(model)
    srl = StarbucksSRLLoss(model, [(4, 32)], kl_weight=0.0)
    total = srl(features(), None)
    assert srl.last_terms[(4, 64)] == pytest.approx(mnrl(features(), None).item(), rel=1e-5)
    matryoshka = losses.MatryoshkaLoss(model, mnrl, [32])
    assert srl.last_terms[(4, 32)] == pytest.approx(matryoshka(features(), None).item(), rel=1e-5)
    assert total.item() == pytest.approx(srl.last_terms[(4, 64)] + srl.last_terms[(4, 32)], rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# The registered model: processor masks, decoder initialisation, per-pair embeddings, export, hf-mae pretrain


def test_processor_draws_nested_whole_word_masks():
    processor = hf_mae.create_processor("starbucks-tiny")
    texts = ["unbelievably the quick brown foxes jumped over lazy dogs repeatedly", "to be or not to be, that is it"]
    words = processor.tokenize(texts)["word_ids"]
    inputs = processor(texts, return_tensors="pt", for_pretraining=True, generator=torch.Generator().manual_seed(3))
    encoder, decoder = inputs["labels"] != -100, inputs["decoder_labels"] != -100
    assert encoder.any() and (encoder & ~decoder).sum() == 0  # 0.2 inside 0.4, exactly
    ordinary = words >= 0
    assert not (decoder & ~ordinary).any()  # [CLS], [SEP] and padding never masked
    for row in range(2):  # whole words: a word is masked in all its pieces or none
        for word in words[row][ordinary[row]].unique():
            pieces = words[row] == word
            assert encoder[row][pieces].all() or not encoder[row][pieces].any()
            assert decoder[row][pieces].all() or not decoder[row][pieces].any()
    # the shares are the configured ratios, to one word's tokens
    for mask, ratio in ((encoder, 0.2), (decoder, 0.4)):
        for row in range(2):
            assert abs(mask[row].sum().item() - ratio * ordinary[row].sum().item()) <= 2.5


def test_pretraining_model_forward_and_per_pair_embeddings():
    model = hf_mae.create_model("starbucks-tiny", task="pretraining").eval()
    encoder = model.starbucks.encoder
    # the decoder starts as a copy of the encoder's first layer
    first = encoder.base_model.encoder.layer[0].state_dict()
    assert all(torch.equal(value, first[key]) for key, value in model.decoder.layer.state_dict().items())
    processor = hf_mae.create_processor("starbucks-tiny")
    texts = ["a cat sat on the mat with a hat", "dogs run"]
    inputs = processor(texts, return_tensors="pt", for_pretraining=True, generator=torch.Generator().manual_seed(0))
    out = model(**inputs)
    expected, _ = smae_pair_losses(encoder, model.decoder, model.config.layer_dim_pairs, inputs["input_ids"],
                                   inputs["attention_mask"], inputs["labels"], inputs["decoder_input_ids"],
                                   inputs["decoder_labels"])
    assert torch.allclose(out.pair_losses, expected) and out.loss.item() == pytest.approx(expected.mean().item())
    assert out.logits.shape == (*inputs["input_ids"].shape, 30522)
    # StarbucksModel(layer, dim): the first dim of hidden_states[layer], CLS-pooled by default
    plain = processor(texts, return_tensors="pt")
    states = encoder.base_model(**plain, output_hidden_states=True).hidden_states
    sub = model.starbucks(**plain, layer=2, dim=32)
    assert torch.allclose(sub.last_hidden_state, states[2][..., :32]) and torch.allclose(sub.pooler_output,
                                                                                          states[2][:, 0, :32])
    with pytest.raises(ValueError, match="layer must be an int in 0..4"):
        model.starbucks(**plain, layer=5)
    with pytest.raises(ValueError, match="dim must be an int in 1..64"):
        model.starbucks(**plain, dim=0)


def test_pretrain_cli_end_to_end_and_export(tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoModelForPreTraining

    corpus = tmp_path / "corpus.jsonl"
    lines = shakespeare_lines(64)
    corpus.write_text("\n".join('{"_id": "%d", "title": "", "text": %s}' % (i, json.dumps(t)) for i, t in enumerate(lines)))
    records = run_pretrain(["--model", "starbucks-tiny", "--dataset", str(corpus), "--max-steps", "6",
                            "--batch-size", "8"], tmp_path / "run")
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    run = tmp_path / "run"
    model = AutoModelForPreTraining.from_pretrained(run)
    assert isinstance(model, StarbucksForPreTraining)
    assert isinstance(AutoModel.from_pretrained(run), StarbucksModel)
    # RUN/encoder: plain transformers and sentence-transformers load the backbone, CLS pooling
    bert = AutoModel.from_pretrained(run / "encoder")
    assert type(bert).__name__ == "BertModel"
    sentence = SentenceTransformer(str(run / "encoder"), device="cpu")
    processor = hf_mae.create_processor("starbucks-tiny")
    plain = processor(["to be or not to be"], return_tensors="pt")
    ours = model.starbucks(**plain).pooler_output
    theirs = torch.tensor(sentence.encode(["to be or not to be"]))
    assert torch.allclose(ours, theirs, atol=1e-5)
