"""RetroMAE: the decoder's per-row attention masks by hand, h_cls carries the text (a trained decoder beats one
trained with h_cls zeroed), hf-mae pretrain end to end (map-style and streamed), and the exported encoder."""

import json
import random
import warnings

import pytest
import torch
from conftest import run_pretrain, shared_data
from transformers import AutoModel

import hf_mae
from hf_mae.modeling.losses import token_cross_entropy
from hf_mae.modeling.retromae import RetroMAEForPreTraining, decoder_attention_masks
from hf_mae.modeling.text import TINY_BERT_CONFIG


def test_decoder_attention_masks_by_hand():
    # [CLS] w0 w0 w1 w2 [SEP] [PAD]: 4 ordinary tokens; ratio 0.5 hides the ranking's prefix closest to 2 tokens
    word_ids = torch.tensor([[-1, 0, 0, 1, 2, -1, -1]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    noise = torch.zeros(1, 7, 7)
    noise[0, :, 1], noise[0, :, 3], noise[0, :, 4] = 0.1, 0.5, 0.9  # every row: ranking w0, w1, w2 -> hides w0
    noise[0, 2, 1], noise[0, 2, 3], noise[0, 2, 4] = 0.9, 0.5, 0.1  # row 2: ranking w2, w1, w0 -> hides w2 (+ w1? no: 1 vs 2)
    visible = decoder_attention_masks(word_ids, attention, 0.5, noise=noise)[0]
    # row 2: prefixes cover 1 (w2), 2 (w2, w1), 4 tokens; closest to 2 -> w2 and w1 hidden; itself hidden too
    expected = torch.tensor([
        [0, 0, 0, 1, 1, 1, 0],  # row 0 ([CLS]): w0 hidden, itself hidden, padding hidden
        [1, 0, 0, 1, 1, 1, 0],
        [1, 1, 0, 0, 0, 1, 0],
        [1, 0, 0, 0, 1, 1, 0],
        [1, 0, 0, 1, 0, 1, 0],
        [1, 0, 0, 1, 1, 0, 0],
        [1, 0, 0, 1, 1, 1, 0],  # a padding row (label -100) still sees h_cls
    ])
    assert torch.equal(visible, expected)
    # drawn: fresh sets per row, never itself, always h_cls (column 0) for the other rows, never padding
    processor = hf_mae.create_processor("retromae-tiny")
    texts = [" ".join(random.Random(i).sample(["alpha", "beta", "gamma", "delta", "river", "stone"] * 5, 24))
             for i in range(4)]
    inputs = processor(texts, return_tensors="pt", for_pretraining=True, generator=torch.Generator().manual_seed(0))
    masks = inputs["decoder_attention_mask"]
    assert masks.diagonal(dim1=1, dim2=2).sum() == 0 and masks[:, 1:, 0].all()
    ordinary = processor.tokenize(texts)["word_ids"] >= 0
    hidden_share = 1 - (masks.bool() & ordinary[:, None, :]).sum(-1)[ordinary].float() / ordinary.sum(1, keepdim=True).expand_as(ordinary)[ordinary]
    assert abs(hidden_share.mean().item() - 0.5) < 0.06
    assert len({tuple(row.tolist()) for row in masks[0, 1:-1]}) > 10  # rows draw their own sets
    assert torch.equal(inputs["decoder_input_ids"], processor(texts, return_tensors="pt")["input_ids"])
    assert torch.equal(inputs["decoder_labels"] != -100, ordinary)  # every token but [CLS] / [SEP] / padding


def _compact(processor, words):
    """A lookup from the tokenizer's ids to a compact vocabulary of the words' pieces plus the special tokens (the
    vocabulary head dominates CPU time: 30,522 rows would make this test minutes long)."""
    tok = processor.tokenizer
    used = sorted({i for w in words for i in tok(w, add_special_tokens=False)["input_ids"]} | set(tok.all_special_ids))
    lut = torch.full((len(tok),), used.index(tok.unk_token_id))
    lut[torch.tensor(used)] = torch.arange(len(used))

    def remap(inputs):
        out = dict(inputs)
        for key in ("input_ids", "decoder_input_ids"):
            out[key] = lut[inputs[key]]
        for key in ("labels", "decoder_labels"):
            out[key] = torch.where(inputs[key] >= 0, lut[inputs[key].clamp(min=0)], inputs[key])
        return out

    return len(used), remap


class ZeroedCLS(RetroMAEForPreTraining):
    """The ablation: the decoder gets a zero vector instead of h_cls (queries and key 0)."""

    def decode(self, h_cls, *args):
        return super().decode(torch.zeros_like(h_cls), *args)


def test_h_cls_carries_the_text(one_thread):
    """Texts of 10 words drawn at random from 300: a token cannot be guessed from its neighbours, only from h_cls
    (the encoder saw 70% of them). After 300 steps the decoder's held-out CE is >= 0.4 nats below that of the same
    model trained with h_cls zeroed (measured 4.93 vs 5.71; log 300 = 5.70), and zeroing h_cls in the trained model
    costs it >= 0.5 nats (measured 6.26); the zeroed ablation learns nothing beyond the unigram."""
    processor = hf_mae.create_processor("retromae-tiny", max_length=16)
    vocab = processor.tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and w.islower() and len(w) >= 4)
    words = random.Random(0).sample(words, 300)
    size, remap = _compact(processor, words)

    def texts(n, seed):
        rng = random.Random(seed)
        return [" ".join(rng.sample(words, 10)) for _ in range(n)]

    held = remap(processor(texts(256, 10**6), return_tensors="pt", for_pretraining=True,
                           generator=torch.Generator().manual_seed(1)))
    results = {}
    for cls in (RetroMAEForPreTraining, ZeroedCLS):
        config = hf_mae.create_config("retromae-tiny", max_length=16, encoder_config=dict(TINY_BERT_CONFIG, vocab_size=size))
        torch.manual_seed(0)
        model = cls(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
        generator = torch.Generator().manual_seed(0)
        first = None
        for step in range(300):
            out = model(**remap(processor(texts(32, step), return_tensors="pt", for_pretraining=True, generator=generator)))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            first = first if first is not None else out.loss.item()
        model.eval()
        with torch.no_grad():
            out = model(**held)
            zeroed = RetroMAEForPreTraining.decode(model, torch.zeros_like(out.sentence_embedding[:, None]),
                                                   held["decoder_input_ids"], held["decoder_attention_mask"])
        results[cls.__name__] = (first, out.loss.item(), out.decoder_loss.item(),
                                 token_cross_entropy(zeroed, held["decoder_labels"]).item())
    print(results)
    real, ablation = results["RetroMAEForPreTraining"], results["ZeroedCLS"]
    assert real[1] < real[0] - 1.0  # the total loss falls
    assert real[2] < ablation[2] - 0.4
    assert real[3] > real[2] + 0.5


def _small_corpus(tmp_path, n=24):
    rows = [json.loads(line) for _, line in zip(range(n), open(shared_data("beir/msmarco-5k") / "corpus.jsonl"))]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path, [row["text"] for row in rows]


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_pretrain_cli_end_to_end_and_the_exported_encoder(tmp_path, streaming, one_thread, capsys):
    from sentence_transformers import SentenceTransformer

    corpus, texts = _small_corpus(tmp_path)
    argv = ["--model", "retromae-tiny", "--dataset", str(corpus), "--max-steps", "3", "--batch-size", "4",
            "--log-steps", "1", "--lr", "1e-3", "--config-overrides", "max_length=32", "--report-to", "none"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # passages over 32 tokens are truncated with a warning
        records = run_pretrain(argv + (["--streaming"] if streaming else []), tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["loss"] > 0 for r in records)
    assert " texts/s; saved to " in capsys.readouterr().out  # a text run counts texts, not images
    run = tmp_path / "run"
    model = hf_mae.RetroMAEForPreTraining.from_pretrained(run).eval()
    processor = hf_mae.RetroMAEProcessor.from_pretrained(run)
    assert processor.encoder_mask_ratio == 0.3 and processor.max_length == 32
    inputs = processor(texts[:4], return_tensors="pt")
    with torch.no_grad():
        expected = model.base_model(**inputs).pooler_output
        plain = AutoModel.from_pretrained(run / "encoder").eval()  # a plain BERT: no hf-mae needed
        assert type(plain).__name__ == "BertModel"
        torch.testing.assert_close(plain(**inputs).last_hidden_state[:, 0], expected, rtol=0, atol=1e-5)
    embedded = SentenceTransformer(str(run / "encoder"), device="cpu").encode(texts[:4], convert_to_tensor=True)
    assert (embedded - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_a_resumed_text_run_ends_with_the_same_weights(tmp_path, streaming, one_thread):
    """Masks are seeded by the batch (its keys, or a stream's texts), so a run resumed from its step-3 checkpoint
    ends with the weights of the uninterrupted one; the resumed run reads only the checkpoint and run_args.json."""
    import shutil

    from safetensors.torch import load_file

    from hf_mae.training.pretrain import pretrain

    corpus, _ = _small_corpus(tmp_path, n=40)
    kwargs = dict(model="retromae-tiny", dataset=str(corpus), max_steps=6, batch_size=4, lr=1e-3, save_steps=3,
                  log_steps=1, report_to="none", streaming=streaming, config_overrides={"max_length": 32})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # passages over 32 tokens are truncated with a warning
        reference, _ = pretrain(output_dir=tmp_path / "reference", **kwargs)
        killed = tmp_path / "killed"
        shutil.copytree(reference / "checkpoints" / "step_3", killed / "checkpoints" / "step_3")
        shutil.copy(reference / "run_args.json", killed)
        resumed, summary = pretrain(output_dir=killed, resume=True, **kwargs)
    assert summary["resumed_from_step"] == 3 and summary["steps"] == 6
    expected, got = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert got.keys() == expected.keys()
    assert max((expected[k] - got[k]).abs().max().item() for k in expected) <= 1e-6


TINY_ROBERTA = dict(model_type="roberta", vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128, max_position_embeddings=130, type_vocab_size=1, pad_token_id=0,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("method", ["retromae-tiny", "dupmae-tiny"])
def test_a_roberta_backbone_trains_and_exports(tmp_path, method, one_thread):
    """The RoBERTa family (its positions count from padding_idx + 1): RetroMAE's decoder queries are the encoder's
    own position embeddings of an unpadded text plus h_cls, the loss falls on a repeated batch, and the export loads
    as a plain RobertaModel and a SentenceTransformer with the model's own embedding. Families the decoders cannot
    use (DistilBERT, ELECTRA: the MLM head in pieces) fail at construction with the family named."""
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = hf_mae.create_model(method, encoder_config=TINY_ROBERTA)
    processor = hf_mae.create_processor(method)
    texts = ["masked auto encoders for dense retrieval", "a second passage, a little longer than the first one"]
    plain = processor(texts[:1], return_tensors="pt")
    embeddings = model.retromae.encoder.base_model.embeddings
    h_cls = torch.randn(1, 1, 64)
    if method == "retromae-tiny":
        length = plain["input_ids"].shape[1]
        positions = torch.arange(length) + embeddings.padding_idx + 1  # what RobertaEmbeddings gives unpadded ids
        torch.testing.assert_close(model.decoder_queries(h_cls, length) - h_cls,
                                   embeddings.position_embeddings(positions).unsqueeze(0).expand(1, -1, -1))
    batch = processor(texts, return_tensors="pt", for_pretraining=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0] - 1.0, losses
    model.eval().save_encoder(tmp_path / "encoder", processor.tokenizer)
    with torch.no_grad():
        inputs = processor(texts, return_tensors="pt")
        expected = model.retromae(**inputs).last_hidden_state[:, 0]  # the export's CLS pooling (DupMAE: its CLS half)
        exported = AutoModel.from_pretrained(tmp_path / "encoder").eval()
        assert type(exported).__name__ == "RobertaModel"
        torch.testing.assert_close(exported(**inputs).last_hidden_state[:, 0], expected, rtol=0, atol=1e-5)
    embedded = SentenceTransformer(str(tmp_path / "encoder"), device="cpu").encode(texts, convert_to_tensor=True)
    assert (embedded - expected).abs().max().item() < 1e-5
    for family in (dict(model_type="distilbert", vocab_size=30522, dim=64, n_layers=2, n_heads=2, hidden_dim=128),
                   dict(model_type="electra", vocab_size=30522, embedding_size=32, hidden_size=64,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)):
        with pytest.raises(TypeError, match=r"ForMaskedLM has no single MLM head module .*BERT and RoBERTa"):
            hf_mae.create_model(method, encoder_config=family)


def test_presets_and_warm_start_from_minilm(tmp_path):
    paper = hf_mae.create_config("retromae-bert-base-uncased")  # nothing downloaded: the config is written out
    assert (paper.encoder_mask_ratio, paper.decoder_mask_ratio, paper.max_length) == (0.3, 0.5, 512)
    assert (paper.hidden_size, paper.num_hidden_layers, paper.encoder_name_or_path) == (768, 12, "bert-base-uncased")
    folder = str(shared_data("models/all-MiniLM-L6-v2/model"))
    model = hf_mae.create_model("retromae-minilm-l6", encoder_name_or_path=folder, tokenizer_name_or_path=folder).eval()
    assert any(key.startswith("cls.") for key in model.warm_start_info["missing_keys"])  # the MLM head is new
    minilm = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    processor = hf_mae.create_processor("retromae-minilm-l6", tokenizer_name_or_path=folder)
    inputs = processor(["warm start from a real encoder", "second"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model.base_model(**inputs).last_hidden_state, minilm(**inputs).last_hidden_state,
                                   rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["encoder_name_or_path"] = str(tmp_path / "gone")  # from_pretrained never reads the warm start again
    (tmp_path / "config.json").write_text(json.dumps(config))
    again = hf_mae.RetroMAEForPreTraining.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again.base_model(**inputs).last_hidden_state, minilm(**inputs).last_hidden_state,
                                   rtol=0, atol=1e-5)
