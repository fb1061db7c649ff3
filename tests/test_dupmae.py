"""DupMAE: the bag-of-words loss and the dual representation by hand, the bag-of-words decoding learns, RetroMAE
checkpoints load, hf-mae pretrain end to end with the exported encoder."""

import json
import math
import warnings

import torch
from conftest import run_pretrain, shared_data
from transformers import AutoModel

import hf_mae
from hf_mae.modeling.dupmae import DupMAEForPreTraining, reduce_lexical

TEXTS = ["the river runs by the old stone bridge", "alpha beta gamma alpha", "a short one"]


def _inputs(processor, texts, seed=0):
    return processor(texts, return_tensors="pt", for_pretraining=True, generator=torch.Generator().manual_seed(seed))


def test_bag_of_words_loss_by_hand():
    torch.manual_seed(0)
    model = hf_mae.create_model("dupmae-tiny").eval()
    processor = hf_mae.create_processor("dupmae-tiny")
    inputs = _inputs(processor, TEXTS)
    with torch.no_grad():
        out = model(**inputs)
    ids, labels, logits = inputs["decoder_input_ids"], inputs["decoder_labels"], out.encoder_logits
    losses = []
    for b in range(len(TEXTS)):
        positions = [i for i in range(ids.shape[1]) if labels[b, i] != -100]  # every token but [CLS]/[SEP]/padding
        pooled = torch.stack([logits[b, i] for i in positions]).max(dim=0).values
        log_p = torch.log_softmax(pooled.double(), dim=-1)
        distinct = {ids[b, i].item() for i in positions}  # "alpha" twice counts once, with weight 1/n
        losses.append(-sum(log_p[v].item() for v in distinct) / len(positions))
    assert abs(out.bow_loss.item() - sum(losses) / len(losses)) < 1e-4
    expected = out.decoder_loss + out.encoder_loss + 0.1 * out.bow_loss
    assert abs(out.loss.item() - expected.item()) < 1e-5
    # the decoder's queries are the embedding module applied to h_cls (position + type embeddings, LayerNorm)
    h_cls = out.sentence_embedding[:, None]
    embeddings = model.retromae.encoder.bert.embeddings
    by_hand = embeddings.LayerNorm(h_cls + embeddings.position_embeddings.weight[:4] + embeddings.token_type_embeddings.weight[0])
    torch.testing.assert_close(model.decoder_queries(h_cls, 4), by_hand)


def test_dual_representation_by_hand():
    assert torch.equal(reduce_lexical(torch.tensor([[1.0, 5.0, 2.0, 0.0, 3.0]]), 2), torch.tensor([[5.0, 3.0]]))
    torch.manual_seed(0)
    model = hf_mae.create_model("dupmae-tiny", task="base", lexical_dim=16).eval()
    processor = hf_mae.create_processor("dupmae-tiny")
    inputs = processor(TEXTS, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
        logits = model.encoder.cls(out.last_hidden_state)
    assert out.pooler_output.shape == (3, 64 + 16)
    torch.testing.assert_close(out.pooler_output[:, :64], out.last_hidden_state[:, 0])  # [CLS] first
    vocab = logits.shape[-1]
    width = math.ceil(vocab / 16)
    for b in range(3):
        last = int(inputs["attention_mask"][b].sum()) - 1  # [SEP]
        pooled = logits[b, 1:last].max(dim=0).values.clamp(min=0)  # ordinary tokens only
        by_hand = torch.stack([pooled[k * width:(k + 1) * width].max() for k in range(16)])
        torch.testing.assert_close(out.pooler_output[b, 64:], by_hand)
    cls_only = hf_mae.create_model("dupmae-tiny", task="base", representation="cls")
    cls_only.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(cls_only.eval()(**inputs).pooler_output, out.last_hidden_state[:, 0])


def test_bag_of_words_decoding_learns_and_retromae_checkpoints_load(tmp_path, one_thread):
    """40 steps on msmarco passages: the bag-of-words loss falls by more than 2 nats (measured 7.7 -> 4.9)."""
    lines = (shared_data("beir/msmarco-5k") / "corpus.jsonl").read_text().splitlines()[:64]
    texts = [json.loads(line)["text"] for line in lines]
    processor = hf_mae.create_processor("dupmae-tiny", max_length=48)
    torch.manual_seed(0)
    model = hf_mae.create_model("dupmae-tiny", max_length=48)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    bow = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # passages over 48 tokens are truncated with a warning
        for step in range(40):
            batch = [texts[(step * 8 + i) % len(texts)] for i in range(8)]
            out = model(**_inputs(processor, batch, seed=step))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            bow.append(out.bow_loss.item())
    print(bow[0], bow[-1])
    assert sum(bow[-5:]) / 5 < bow[0] - 2.0
    # a RetroMAE checkpoint is a DupMAE one (same weight names): the encoder and decoder load unchanged
    retro = hf_mae.create_model("retromae-tiny")
    retro.save_pretrained(tmp_path / "retro")
    dup = DupMAEForPreTraining.from_pretrained(tmp_path / "retro")
    assert all(torch.equal(a, b) for a, b in zip(retro.state_dict().values(), dup.state_dict().values()))


def test_pretrain_cli_end_to_end_and_the_exported_encoder(tmp_path, one_thread):
    from sentence_transformers import SentenceTransformer

    corpus = shared_data("beir/msmarco-5k") / "corpus.jsonl"
    rows = corpus.read_text().splitlines()[:16]
    small = tmp_path / "corpus.jsonl"
    small.write_text("\n".join(rows) + "\n")
    argv = ["--model", "dupmae-tiny", "--dataset", str(small), "--max-steps", "3", "--batch-size", "4",
            "--log-steps", "1", "--lr", "1e-3", "--config-overrides", "max_length=32", "--report-to", "none"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = run_pretrain(argv, tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["loss"] > 0 for r in records)
    run = tmp_path / "run"
    model = hf_mae.DupMAEForPreTraining.from_pretrained(run).eval()
    processor = hf_mae.DupMAEProcessor.from_pretrained(run)
    inputs = processor(TEXTS, return_tensors="pt")
    with torch.no_grad():
        dual = model.base_model(**inputs).pooler_output
        plain = AutoModel.from_pretrained(run / "encoder").eval()
        torch.testing.assert_close(plain(**inputs).last_hidden_state[:, 0], dual[:, :64], rtol=0, atol=1e-5)
    # the sentence-transformers folder serves the [CLS] half (it has no module for the lexical half)
    embedded = SentenceTransformer(str(run / "encoder"), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert (embedded - dual[:, :64]).abs().max().item() < 1e-5
