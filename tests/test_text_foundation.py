"""The text foundation: the text data loader, nested whole-word masks, BERT's corruption, the text processor's
bad-input errors, the backbone config base and the plain encoder export (modeling/text.py)."""

import json
import warnings

import pytest
import torch
from conftest import shared_data

from hf_mae.modeling.losses import bag_of_words_loss, token_cross_entropy
from hf_mae.modeling.masking import mlm_corruption, whole_word_masks
from hf_mae.training.text_data import load_text_dataset


# -- the loader ------------------------------------------------------------------------------------------------------


def test_text_files_jsonl_beir_rows_folders_and_streaming(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\n   \nsecond line\n")
    rows = [{"_id": "1", "title": "Title", "text": "body one"}, {"_id": "2", "title": "", "text": "body two"}]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_text_dataset(str(tmp_path / "a.txt"))["text"] == ["first line", "second line"]
    assert load_text_dataset(tmp_path / "corpus.jsonl")["text"] == ["Title body one", "body two"]  # BEIR: title + text
    folder = load_text_dataset(str(tmp_path))  # every text file, sorted
    assert folder["text"] == ["first line", "second line", "Title body one", "body two"]
    assert folder.column_names == ["text"]
    streamed = load_text_dataset(str(tmp_path), streaming=True)
    assert [row["text"] for row in streamed] == folder["text"]
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "a query"}) + "\n")
    assert load_text_dataset(str(tmp_path))["text"] == ["Title body one", "body two"]  # a BEIR folder: the corpus only
    (tmp_path / "other.jsonl").write_text(json.dumps({"passage": "p1", "id": 3}) + "\n")
    assert load_text_dataset(str(tmp_path / "other.jsonl"))["text"] == ["p1"]


def test_the_real_corpus_and_shakespeare_load():
    corpus = load_text_dataset(str(shared_data("beir/msmarco-5k")))
    assert len(corpus) == 5000 and corpus[0]["text"].startswith("Fahrenheit Scale")
    lines = load_text_dataset(str(shared_data("text/tinyshakespeare.txt")))
    assert len(lines) > 30000 and lines[0]["text"] == "First Citizen:"


def test_loader_bad_input(tmp_path):
    with pytest.raises(ValueError, match="neither a text file"):
        load_text_dataset(str(tmp_path / "missing.txt"))
    (tmp_path / "x.jsonl").write_text(json.dumps({"body_text": "x"}) + "\n")
    with pytest.raises(ValueError, match="no text column found.*text_column"):
        load_text_dataset(str(tmp_path / "x.jsonl"))
    assert load_text_dataset(str(tmp_path / "x.jsonl"), text_column="body_text")["text"] == ["x"]
    with pytest.raises(ValueError, match="split 'test'.*only 'train'"):
        load_text_dataset(str(tmp_path / "x.jsonl"), split="test")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        load_text_dataset(str(tmp_path / "bad.jsonl"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no non-empty text"):
        load_text_dataset(str(tmp_path / "empty.txt"))
    (tmp_path / "img.png").write_bytes(b"")
    with pytest.raises(ValueError, match="must end with"):
        load_text_dataset(str(tmp_path / "img.png"))


# -- masks -----------------------------------------------------------------------------------------------------------


def test_whole_word_masks_by_hand_and_nested():
    # [CLS] w0 w0 w1 w2 w2 w2 w3 [SEP] [PAD]: 7 ordinary tokens in 4 words of 2, 1, 3, 1 tokens
    word_ids = torch.tensor([[-1, 0, 0, 1, 2, 2, 2, 3, -1, -1]])
    # a word's draw is the noise at its first token: w3 0.1 < w1 0.2 < w0 0.3 < w2 0.4 -> ranking w3, w1, w0, w2;
    # prefixes cover 1, 2, 4, 7 tokens
    noise = torch.tensor([[0.0, 0.3, 0.9, 0.2, 0.4, 0.0, 0.0, 0.1, 0.0, 0.0]])
    r20, r30, r50, r100, r0 = whole_word_masks(word_ids, [0.2, 0.3, 0.5, 1.0, 0.0], noise=noise)
    # 0.2 * 7 = 1.4 -> prefix of 1 token (w3); 0.3 * 7 = 2.1 -> 2 (w3, w1); 0.5 * 7 = 3.5 -> 4 (w3, w1, w0)
    assert r20[0].nonzero().flatten().tolist() == [7]
    assert r30[0].nonzero().flatten().tolist() == [3, 7]
    assert r50[0].nonzero().flatten().tolist() == [1, 2, 3, 7]
    assert r100[0].nonzero().flatten().tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert r0.sum() == 0
    # drawn rankings: nested for every row, special / padding never masked, the share close to the ratio
    generator = torch.Generator().manual_seed(0)
    words = torch.arange(60).repeat_interleave(2)[:100].expand(50, -1).clone()  # 50 texts of 50 two-token words
    words[:, 0] = -1
    small, large = whole_word_masks(words, [0.2, 0.4], generator=generator)
    assert torch.all(small <= large) and not small[:, 0].any()
    assert abs(small.float().sum(1).mean().item() / 99 - 0.2) < 0.02
    assert abs(large.float().sum(1).mean().item() / 99 - 0.4) < 0.02
    # the pieces of one word are masked together
    assert torch.equal(large[:, 2::2], large[:, 3::2])  # tokens 2k and 2k+1 form word k
    with pytest.raises(ValueError, match="ratios"):
        whole_word_masks(word_ids, 1.5)


def test_mlm_corruption_shares_and_labels():
    generator = torch.Generator().manual_seed(0)
    ids = torch.full((200, 100), 7)
    mask = torch.rand(200, 100, generator=generator) < 0.3
    corrupted, labels = mlm_corruption(ids, mask, mask_token_id=3, vocab_size=1000, generator=generator)
    assert torch.equal(labels, torch.where(mask, ids, torch.full_like(ids, -100)))
    assert torch.equal(corrupted[~mask], ids[~mask])
    masked = corrupted[mask]
    shares = [(masked == 3).float().mean().item(), ((masked != 3) & (masked != 7)).float().mean().item()]
    assert abs(shares[0] - 0.8) < 0.02 and abs(shares[1] - 0.1 * 998 / 1000) < 0.02, shares


def test_token_cross_entropy_and_bag_of_words_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    labels = torch.tensor([[0, -100]])
    expected = -torch.log_softmax(logits[0, 0], -1)[0]
    torch.testing.assert_close(token_cross_entropy(logits, labels), expected)
    assert token_cross_entropy(logits, torch.full((1, 2), -100)).item() == 0.0
    # BoW: positions 1 and 2 ordinary (ids 2, 2: a repeated id, collapsed), position 0 and 3 not
    logits = torch.tensor([[[9.0, 9.0, 9.0, 9.0], [0.0, 1.0, 2.0, 0.0], [1.0, 0.0, 0.5, 3.0], [5.0, 5.0, 5.0, 5.0]]])
    ids = torch.tensor([[1, 2, 2, 0]])
    positions = torch.tensor([[False, True, True, False]])
    pooled = torch.tensor([1.0, 1.0, 2.0, 3.0])  # max over positions 1, 2
    expected = -(0.5 * torch.log_softmax(pooled, -1)[2])  # w_2 = 1/2 (n = 2 tokens, one distinct id)
    torch.testing.assert_close(bag_of_words_loss(logits, ids, positions), expected)


# -- the processor and the config base -------------------------------------------------------------------------------


def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(shared_data("models/all-MiniLM-L6-v2/model")))


def test_text_processor_truncates_with_a_warning_and_refuses_bad_input():
    from hf_mae.modeling.text import TextProcessor

    processor = TextProcessor(minilm_tokenizer(), max_length=16)
    long_text = " ".join(["word"] * 40)
    with pytest.warns(UserWarning, match="1 of 2 texts are longer than max_length=16"):
        out = processor([long_text, "short text"], return_tensors="pt")
    assert out["input_ids"].shape == (2, 16) and out["attention_mask"][1].sum() == 4  # [CLS] short text [SEP]
    assert out["input_ids"][0, -1] == processor.tokenizer.sep_token_id  # truncation keeps the closing [SEP]
    batch = processor.tokenize(["unbelievable tokenization"])  # word pieces share their word's id
    pieces = processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert batch["word_ids"][0].tolist() == [-1] + [0] * (pieces.index("token") - 1) + [1] * (len(pieces) - 1 - pieces.index("token")) + [-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor(["short"], return_tensors="pt")  # no warning below the limit
    with pytest.raises(ValueError, match="empty texts at positions \\[1\\]"):
        processor(["fine", "   "])
    with pytest.raises(TypeError, match="unknown settings \\['padding_side'\\]"):
        processor(["fine"], padding_side="left")
    with pytest.raises(TypeError, match="non-empty list of strings"):
        processor([])
    with pytest.raises(NotImplementedError, match="pretraining_inputs"):
        processor(["fine"], for_pretraining=True)
    with pytest.raises(ValueError, match="max_length"):
        TextProcessor(minilm_tokenizer(), max_length=1)


def test_config_base_checks_and_reads_only_the_architecture(tmp_path):
    from transformers import BertConfig

    from hf_mae.modeling.text import TINY_BERT_CONFIG, TextEncoderConfig, build_masked_lm

    with pytest.raises(ValueError, match="max_length"):
        TextEncoderConfig(encoder_config=TINY_BERT_CONFIG, max_length=1)
    with pytest.raises(ValueError, match="max_length 4096 exceeds the encoder's max_position_embeddings 128"):
        TextEncoderConfig(encoder_config=TINY_BERT_CONFIG, max_length=4096)
    with pytest.raises(ValueError, match="pooling"):
        TextEncoderConfig(encoder_config=TINY_BERT_CONFIG, pooling="max")
    with pytest.raises(ValueError, match="encoder_config must be a config dict"):
        TextEncoderConfig(encoder_config={"hidden_size": 3})
    with pytest.raises(ValueError, match="needs a backbone"):
        TextEncoderConfig().backbone_config()
    # a name alone: the architecture from its config.json (no weights read)
    BertConfig(**{k: v for k, v in TINY_BERT_CONFIG.items() if k != "model_type"}).save_pretrained(tmp_path)
    config = TextEncoderConfig(encoder_name_or_path=str(tmp_path), max_length=64)
    assert config.encoder_config["hidden_size"] == 64 and config.tokenizer_source == str(tmp_path)
    gpt2 = TextEncoderConfig(encoder_config={"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2})
    with pytest.raises(TypeError, match="model_type 'gpt2', which has no AutoModelForMaskedLM"):
        build_masked_lm(gpt2)


def test_a_tokenizer_without_mask_token_is_named():
    from hf_mae.modeling.text import check_mask_token

    tokenizer = minilm_tokenizer()
    assert check_mask_token(tokenizer) == 103
    tokenizer.mask_token = None
    tokenizer.name_or_path = "my-tokenizer"
    with pytest.raises(ValueError, match="tokenizer 'my-tokenizer' has no mask token"):
        check_mask_token(tokenizer)


def test_save_encoder_loads_with_auto_model_and_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from hf_mae.modeling.text import TINY_BERT_CONFIG, TextEncoderConfig, TextProcessor, build_masked_lm, pool, save_encoder

    torch.manual_seed(0)
    masked_lm = build_masked_lm(TextEncoderConfig(encoder_config=TINY_BERT_CONFIG)).eval()
    tokenizer = minilm_tokenizer()
    texts = ["a first sentence about retrieval", "and a second, shorter one"]
    inputs = TextProcessor(tokenizer, max_length=64)(texts, return_tensors="pt")
    with torch.no_grad():
        hidden = masked_lm.base_model(**inputs).last_hidden_state
    for pooling in ("cls", "mean"):
        folder = save_encoder(masked_lm, tmp_path / pooling, tokenizer, pooling=pooling, max_length=64)
        encoder = AutoModel.from_pretrained(folder).eval()
        with torch.no_grad():
            torch.testing.assert_close(encoder(**inputs).last_hidden_state, hidden, rtol=0, atol=1e-6)
        embedded = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
        expected = pool(hidden, inputs["attention_mask"], pooling)
        assert (embedded - expected).abs().max().item() < 1e-5, pooling
