"""Retrieval evaluation: metrics by hand on a hand-made corpus, BEIR loading, per-(layer, dim) scores, truncation,
the command line, and the real all-MiniLM-L6-v2 on a subset of beir/msmarco-5k (the full 5,000-passage figure
is benchmarks/retrieval_msmarco.py's zero-shot row, ~4-11 min on one shared thread: nDCG@10 = 0.798 with
trec_eval's linear gains, 0.7043 with 2^g - 1 gains = the data README's 0.704)."""

import json
import math
import os
import warnings

import pytest
import torch

from conftest import shared_data
from hf_mae.cli import main
from hf_mae.training.retrieval import evaluate_retrieval, load_beir, measure, pseudo_query_pairs, rank

# ---------------------------------------------------------------------------------------------- hand-made corpus

# 2-d vectors: cosine and dot product rank differently (d has norm 2.83, the others ~1)
VECTORS = {"a": (1.0, 0.0), "b": (0.8, 0.6), "c": (0.0, 1.0), "d": (2.0, 2.0), "e": (-1.0, -0.1),
           "q1": (1.0, 0.0), "q2": (0.0, 1.0), "q3": (1.0, 1.0)}
CORPUS = {k: k for k in "abcde"}  # each text is its id; the callable encoder looks it up
QUERIES = {"q1": "q1", "q2": "q2", "q3": "q3"}
# q1: b (grade 2) and c (1) in the corpus, z (1) judged but not in it; q2: a (1); q3 has no qrels (dropped)
QRELS = {"q1": {"b": 2, "c": 1, "z": 1}, "q2": {"a": 1}}


def lookup(texts):
    return torch.tensor([VECTORS[t] for t in texts])


def test_metrics_match_the_hand_computation_for_cosine_and_dot():
    # cosine, q1: a 1, b .8, d .707, c 0, e -.995 -> b at rank 2 (gain 2), c at rank 4 (gain 1);
    #   DCG = 2/log2(3) + 1/log2(5), ideal grades (2, 1, 1): 2/log2(2) + 1/log2(3) + 1/log2(4);
    #   RR 1/2; R 2/3 (z is judged but not in the corpus)
    # cosine, q2: c 1, d .707, b .6, a 0, e -.0995 -> a at rank 4: nDCG 1/log2(5); RR 1/4; R 1
    ideal_q1 = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    cos_q1 = (2 / math.log2(3) + 1 / math.log2(5)) / ideal_q1
    expected_cos = {"nDCG@10": (cos_q1 + 1 / math.log2(5)) / 2, "RR@10": (1 / 2 + 1 / 4) / 2,
                    "R@100": (2 / 3 + 1) / 2}
    got = evaluate_retrieval(lookup, (CORPUS, QUERIES, QRELS), score="cos", progress=False)
    assert got == pytest.approx(expected_cos, abs=1e-6)
    assert got["nDCG@10"] == pytest.approx(0.485636, abs=1e-5)  # the same number written out
    # dot, q1: d 2, a 1, b .8, c 0, e -1 -> b at rank 3, c at rank 4: RR 1/3; q2: d 2, c 1, b .6, a 0 -> a at rank 4
    dot_q1 = (2 / math.log2(4) + 1 / math.log2(5)) / ideal_q1
    expected_dot = {"nDCG@10": (dot_q1 + 1 / math.log2(5)) / 2, "RR@10": (1 / 3 + 1 / 4) / 2,
                    "R@100": (2 / 3 + 1) / 2}
    assert evaluate_retrieval(lookup, (CORPUS, QUERIES, QRELS), score="dot", progress=False) == pytest.approx(
        expected_dot, abs=1e-6)
    # exponential gains 2^g - 1: grade 2 -> 3, grade 1 -> 1 (cosine ranking): q1 ideal 3 + 1/log2(3) + 1/log2(4)
    exp_q1 = (3 / math.log2(3) + 1 / math.log2(5)) / (3 + 1 / math.log2(3) + 1 / math.log2(4))
    got = evaluate_retrieval(lookup, (CORPUS, QUERIES, QRELS), ndcg_gains="exponential", progress=False)
    assert got == pytest.approx({**expected_cos, "nDCG@10": (exp_q1 + 1 / math.log2(5)) / 2}, abs=1e-6)
    assert abs(got["nDCG@10"] - expected_cos["nDCG@10"]) > 0.01  # the gains matter here


def test_a_first_relevant_passage_past_rank_10_gives_rr10_zero_and_recall_counts_to_100():
    # 120 passages at angles 0..119 degrees / 4 from the query: passage i is ranked i+1 (cosine decreasing)
    corpus = {f"p{i}": f"p{i}" for i in range(120)}
    vectors = {f"p{i}": (math.cos(math.radians(i / 4)), math.sin(math.radians(i / 4))) for i in range(120)}
    vectors["q"] = (1.0, 0.0)
    qrels = {"q": {"p10": 1, "p50": 1, "p110": 1}}  # ranks 11, 51, 111
    got = evaluate_retrieval(lambda t: torch.tensor([vectors[x] for x in t]), (corpus, {"q": "q"}, qrels),
                             progress=False)
    assert got["RR@10"] == 0.0 and got["nDCG@10"] == 0.0
    assert got["R@100"] == pytest.approx(2 / 3)


def write_beir(folder, corpus, queries, qrels, header: bool):
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for k, v in corpus.items():
            f.write(json.dumps({"_id": k, "title": "", "text": v}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for k, v in queries.items():
            f.write(json.dumps({"_id": k, "text": v}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as f:
        if header:
            f.write("query-id\tcorpus-id\tscore\n")
        for q, docs in qrels.items():
            for d, g in docs.items():
                f.write(f"{q}\t{d}\t{g}\n")
    return folder


def test_load_beir_with_and_without_header_keeps_judged_queries(tmp_path):
    for header in (True, False):
        folder = write_beir(tmp_path / str(header), CORPUS, QUERIES, QRELS, header)
        corpus, queries, qrels = load_beir(folder)
        assert corpus == CORPUS and qrels == QRELS
        assert queries == {"q1": "q1", "q2": "q2"}  # q3 has no qrels
    with pytest.raises(FileNotFoundError, match=r"qrels/dev.tsv.*splits there: test"):
        load_beir(tmp_path / "True", split="dev")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_beir(tmp_path / "nowhere")


def test_bad_input_raises_errors_that_name_the_argument():
    data = (CORPUS, QUERIES, QRELS)
    with pytest.raises(ValueError, match="the corpus is empty"):
        evaluate_retrieval(lookup, ({}, QUERIES, QRELS), progress=False)
    with pytest.raises(ValueError, match="there are no queries"):
        evaluate_retrieval(lookup, (CORPUS, {}, QRELS), progress=False)
    with pytest.raises(ValueError, match=r"1 queries text\(s\) are empty.*'q2'"):
        evaluate_retrieval(lookup, (CORPUS, {"q1": "q1", "q2": " "}, QRELS), progress=False)
    with pytest.raises(ValueError, match="score must be one of"):
        evaluate_retrieval(lookup, data, score="l2", progress=False)
    with pytest.raises(ValueError, match="layer_dims needs the model's hidden states"):
        evaluate_retrieval(lookup, data, layer_dims=[(1, 2)], progress=False)
    with pytest.raises(TypeError, match="layer_dims must be a list of"):
        evaluate_retrieval(lookup, data, layer_dims=[(1, 2, 3)], progress=False)
    with pytest.raises(TypeError, match="dataset must be a BEIR folder or"):
        evaluate_retrieval(lookup, [CORPUS], progress=False)
    with pytest.raises(ValueError, match="pseudo|texts is empty"):
        pseudo_query_pairs([])


def test_pseudo_query_pairs_are_sentences_of_their_passage_mostly_removed():
    texts = [f"Sentence one of passage {i} is here. The second sentence of passage {i} follows now. A third one "
             f"closes passage {i} today." for i in range(200)]
    pairs = pseudo_query_pairs(texts, seed=3)
    assert len(pairs) == 200 and pairs == pseudo_query_pairs(texts, seed=3) != pseudo_query_pairs(texts, seed=4)
    removed = 0
    for (query, passage), text in zip(pairs, texts):
        assert query.rstrip(".") in text and len(query.split()) <= 16
        removed += query not in passage
    assert 0.8 < removed / 200 < 0.98  # ICT's 90% removal


# ---------------------------------------------------------------------------------------------- tiny real model

WORDS = ("the cat dog sat on mat ran in park red blue house big small tree bird sang song river flows fast slow "
         "green hill").split()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny random BertModel folder over a hand-made WordPiece vocabulary (nothing downloaded)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = BertTokenizer(vocab=vocab, model_max_length=64)
    assert tokenizer("the cat")["input_ids"] == [2, 5, 6, 3]  # real words, not [UNK]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_data():
    g = torch.Generator().manual_seed(0)
    corpus = {f"d{i}": " ".join(WORDS[j] for j in torch.randint(0, len(WORDS), (12,), generator=g)) for i in range(40)}
    queries = {f"q{i}": " ".join(corpus[f"d{i}"].split()[:4]) for i in range(8)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 10}": 2} for i in range(8)}
    return corpus, queries, qrels


def test_layer_dims_score_the_pooled_layer_cut_to_dim(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    data = tiny_data()
    model = AutoModel.from_pretrained(tiny_bert).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)

    def by_hand(layer, dim, pooling):
        def encode(texts):
            inputs = tokenizer(texts, padding=True, return_tensors="pt")
            with torch.no_grad():
                states = model(**inputs, output_hidden_states=True).hidden_states[layer]
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pooled = states[:, 0] if pooling == "cls" else (states * mask).sum(1) / mask.sum(1)
            return pooled[:, :dim]
        return evaluate_retrieval(encode, data, progress=False)

    got = evaluate_retrieval(str(tiny_bert), data, layer_dims=[(2, 16), (1, 8), (0, 5)], progress=False)
    assert set(got) == {(2, 16), (1, 8), (0, 5)}
    for (layer, dim), metrics in got.items():
        assert metrics == pytest.approx(by_hand(layer, dim, "mean"), abs=1e-6)
    # the last layer at full width is the model's own output; cls pooling is another embedding
    assert evaluate_retrieval(str(tiny_bert), data, progress=False) == pytest.approx(got[(2, 16)], abs=1e-6)
    cls = evaluate_retrieval(str(tiny_bert), data, pooling="cls", layer_dims=[(1, 8)], progress=False)[(1, 8)]
    assert cls == pytest.approx(by_hand(1, 8, "cls"), abs=1e-6)
    assert cls != pytest.approx(got[(1, 8)], abs=1e-3)
    with pytest.raises(ValueError, match=r"layer 3 is outside 0..2"):
        evaluate_retrieval(str(tiny_bert), data, layer_dims=[(3, 8)], progress=False)
    with pytest.raises(ValueError, match=r"dim 17 is outside 1..16"):
        evaluate_retrieval(str(tiny_bert), data, layer_dims=[(1, 17)], progress=False)


def test_over_long_texts_are_truncated_with_one_warning(tiny_bert):
    corpus, queries, qrels = tiny_data()  # passages: 12 words + [CLS] [SEP] = 14 tokens; queries 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        short = evaluate_retrieval(str(tiny_bert), (corpus, queries, qrels), max_length=8, progress=False)
    messages = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert messages == ["40 of 48 texts (passages and queries) are longer than 8 tokens and were truncated to it"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at the model's own limit (64)
        full = evaluate_retrieval(str(tiny_bert), (corpus, queries, qrels), progress=False)
    assert short != full
    with pytest.raises(ValueError, match="max_length=100 is beyond the model's limit of 64"):
        evaluate_retrieval(str(tiny_bert), (corpus, queries, qrels), max_length=100, progress=False)


def test_cli_end_to_end_and_its_errors(tiny_bert, tmp_path, capsys):
    folder = write_beir(tmp_path / "beir", *tiny_data(), header=False)
    out = tmp_path / "results.json"
    assert main(["evaluate-retrieval", str(tiny_bert), "--dataset", str(folder), "--layer-dims", "1:8", "2:16",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 judged queries over 40 passages" in printed and "nDCG@10" in printed and "1:8" in printed
    saved = json.loads(out.read_text())["results"]
    direct = evaluate_retrieval(str(tiny_bert), load_beir(folder), layer_dims=[(1, 8), (2, 16)], progress=False)
    assert saved["1:8"] == pytest.approx(direct[(1, 8)]) and saved["2:16"] == pytest.approx(direct[(2, 16)])
    # bad input: one line, exit 2, no traceback
    capsys.readouterr()  # drop the loading bars of the direct call
    assert main(["evaluate-retrieval", str(tiny_bert), "--dataset", str(tmp_path / "none")], report_errors=True) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-mae evaluate-retrieval: error: dataset") and "Traceback" not in err
    assert main(["evaluate-retrieval", str(tiny_bert), "--dataset", str(folder), "--layer-dims", "9:8"],
                report_errors=True) == 2
    assert "layer 9 is outside 0..2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate-retrieval", str(tiny_bert), "--dataset", str(folder), "--layer-dims", "2x"])
    assert exit_info.value.code == 2 and "expected LAYER:DIM" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the real MiniLM

SUBSET = 100  # the first 100 passages of msmarco-5k: ~5 s per embedding on one thread


def hand_metrics(query_vectors, doc_vectors, query_ids, doc_ids, qrels, gain=lambda g: g):
    """nDCG@10 / RR@10 / R@100 of a cosine ranking written out: sorted() over all scores, trec_eval's formulas
    (``gain`` of a grade: the grade itself as trec_eval, or 2^g - 1)."""
    q = torch.nn.functional.normalize(query_vectors.float(), dim=-1)
    d = torch.nn.functional.normalize(doc_vectors.float(), dim=-1)
    totals = {"nDCG@10": 0.0, "RR@10": 0.0, "R@100": 0.0}
    for row, qid in enumerate(query_ids):
        scores = (d @ q[row]).tolist()
        ranking = [doc_ids[i] for i in sorted(range(len(doc_ids)), key=lambda i: -scores[i])]
        grades = qrels[qid]
        dcg = sum(gain(grades.get(doc, 0)) / math.log2(r + 2) for r, doc in enumerate(ranking[:10]))
        ideal = sum(gain(g) / math.log2(r + 2) for r, g in enumerate(sorted(grades.values(), reverse=True)[:10]))
        totals["nDCG@10"] += dcg / ideal
        totals["RR@10"] += next((1 / (r + 1) for r, doc in enumerate(ranking[:10]) if grades.get(doc, 0) > 0), 0.0)
        totals["R@100"] += sum(1 for doc in ranking[:100] if grades.get(doc, 0) > 0) / sum(
            1 for g in grades.values() if g > 0)
    return {k: v / len(query_ids) for k, v in totals.items()}


@pytest.fixture(scope="module")
def minilm_subset():
    folder = shared_data("models/all-MiniLM-L6-v2/model")
    corpus, queries, qrels = load_beir(shared_data("beir/msmarco-5k"))
    kept = list(corpus)[:SUBSET]
    sub_qrels = {q: {d: g for d, g in docs.items() if d in set(kept)} for q, docs in qrels.items()}
    sub_qrels = {q: docs for q, docs in sub_qrels.items() if docs}
    return folder, ({d: corpus[d] for d in kept}, {q: queries[q] for q in sub_qrels}, sub_qrels)


def test_minilm_on_a_msmarco_subset_matches_sentence_transformers_and_a_hand_ranking(minilm_subset, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder, (corpus, queries, qrels) = minilm_subset
    assert len(queries) == 31  # the judged queries with a judged passage among the first 100
    st = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.float32})
    doc_ids, query_ids = list(corpus), list(queries)
    query_vectors = st.encode([queries[q] for q in query_ids], convert_to_tensor=True)
    doc_vectors = st.encode([corpus[d] for d in doc_ids], convert_to_tensor=True)
    reference = hand_metrics(query_vectors, doc_vectors, query_ids, doc_ids, qrels)
    exponential = hand_metrics(query_vectors, doc_vectors, query_ids, doc_ids, qrels, gain=lambda g: 2 ** g - 1)
    # the subset's figures, computed once (sentence-transformers 6.2, fp32, 256 tokens): a regression anchor
    assert reference == pytest.approx({"nDCG@10": 0.9100, "RR@10": 0.9194, "R@100": 1.0}, abs=2e-3)
    got = evaluate_retrieval(str(folder), (corpus, queries, qrels), progress=False)
    assert got == pytest.approx(reference, abs=1e-6)
    # the data README's gains (its 0.704 on all 5,000 passages is 2^g - 1; linear gives 0.798 there)
    assert measure(qrels, rank(query_vectors, doc_vectors, query_ids, doc_ids), "exponential") == pytest.approx(
        exponential, abs=1e-6)
    # the same weights as a plain transformers folder (no modules.json): mean pooling at 256 tokens, same scores
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        os.symlink(folder / name, plain / name)
    assert evaluate_retrieval(str(plain), (corpus, queries, qrels), pooling="mean", max_length=256,
                              progress=False) == pytest.approx(reference, abs=1e-4)


# ---------------------------------------------------------------------------------------------- fine-tune, benchmark


def test_contrastive_finetune_learns_the_pseudo_queries_and_saves_a_folder_both_libraries_load(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from hf_mae.training.retrieval import contrastive_finetune

    corpus, _, _ = tiny_data()
    pairs = pseudo_query_pairs(list(corpus.values()), seed=0)  # one sentence each: a 4..8-word span as the query
    assert len(pairs) == 40
    ids = list(corpus)
    data = (corpus, {f"q{i}": q for i, (q, _) in enumerate(pairs)}, {f"q{i}": {ids[i]: 1} for i in range(40)})
    before = evaluate_retrieval(str(tiny_bert), data, progress=False)
    out = contrastive_finetune(str(tiny_bert), pairs, tmp_path / "tuned", steps=40, batch_size=8, lr=1e-3, seed=0,
                               progress=False, device="cpu")
    after = evaluate_retrieval(out, data, progress=False)
    assert after["nDCG@10"] > before["nDCG@10"] + 0.1, (before, after)
    assert not (tmp_path / "tuned" / "trainer").exists()
    # the folder is a SentenceTransformer (mean pooling kept) and a plain BertModel; both give the same scores
    assert SentenceTransformer(out, device="cpu")[1].pooling_mode == "mean"
    assert type(AutoModel.from_pretrained(out)).__name__ == "BertModel"
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in os.listdir(out):
        if name.endswith((".json", ".txt", ".safetensors")) and name not in ("modules.json",):
            os.symlink(os.path.join(out, name), plain / name)
    assert evaluate_retrieval(str(plain), data, progress=False) == pytest.approx(after, abs=1e-5)
    with pytest.raises(ValueError, match="batch_size=64 is larger than the 40 pairs"):
        contrastive_finetune(str(tiny_bert), pairs, tmp_path / "x", steps=1, batch_size=64)


def test_benchmark_rows_resume_and_summarise(tiny_bert, tmp_path):
    from conftest import load_benchmark

    bench = load_benchmark("retrieval_msmarco")
    dataset = write_beir(tmp_path / "beir", *tiny_data(), header=False)
    argv = ["--start", f"tiny={tiny_bert}", "--dataset", str(dataset), "--seeds", "0", "--steps", "2",
            "--batch-size", "4", "--eval-max-length", "32", "--train-max-length", "32",
            "--output-dir", str(tmp_path / "out")]
    assert bench.main(argv) == 0
    rows = sorted(os.listdir(tmp_path / "out" / "rows"))
    assert rows == ["tiny-seed0.json", "tiny-zeroshot.json"]
    summary = json.loads((tmp_path / "out" / "retrieval_msmarco.json").read_text())["summary"]["tiny"]
    zero = json.loads((tmp_path / "out" / "rows" / "tiny-zeroshot.json").read_text())["metrics"]
    assert summary["zero-shot"] == zero and summary["seeds"] == [0] and summary["errors"] == {}
    tuned = json.loads((tmp_path / "out" / "rows" / "tiny-seed0.json").read_text())["metrics"]
    assert summary["fine-tuned"]["nDCG@10"]["mean"] == tuned["nDCG@10"]
    assert f"| tiny | {zero['nDCG@10']:.3f} | {tuned['nDCG@10']:.3f} |" in (tmp_path / "out" / "results.md").read_text()
    stamp = os.path.getmtime(tmp_path / "out" / "rows" / "tiny-seed0.json")
    assert bench.main(argv) == 0  # a rerun keeps the rows that are there
    assert os.path.getmtime(tmp_path / "out" / "rows" / "tiny-seed0.json") == stamp
    with pytest.raises(ValueError, match="--start takes NAME=FOLDER"):
        bench.main(["--start", str(tiny_bert), "--output-dir", str(tmp_path / "bad")])
