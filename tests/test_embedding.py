"""task: embedding -- sentence-transformers training through the spine, on a tiny local BERT (seconds)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llmkit
from llmkit.metrics.ranking import retrieval_outcomes, retrieval_scores, similarity_correlations
from llmkit.tasks.embedding import EmbeddingTask
from tests.conftest import NEGATIVE, POSITIVE, write_csv

RETRIEVAL_KEYS = {"eval_mrr_at_10", "eval_recall_at_1", "eval_recall_at_10", "eval_ndcg_at_10"}
STS_KEYS = {"eval_pearson", "eval_spearman"}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def pair_row(index: int, shape: str) -> dict[str, Any]:
    """A review and a paraphrase of it; a triplet adds an opposite review, a scored pair a 0-5 score."""
    texts = POSITIVE + NEGATIVE
    anchor = texts[index % len(texts)]
    if shape == "scored":
        similar = index % 2 == 0
        other = f"so {anchor}" if similar else texts[(index + 7) % len(texts)]
        return {"sentence1": anchor, "sentence2": other, "score": 4.5 if similar else 0.5 + index % 3}
    row = {"anchor": anchor, "positive": f"in short: {anchor}"}
    if shape == "triplets":
        row["negative"] = texts[(index + 10) % len(texts)]
    return row


def train(tmp_path: Path, shape: str, **data: Any) -> Path:
    """Two steps at a high learning rate on 12 rows, validated on 6 others."""
    rows = [pair_row(i, shape) for i in range(18)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    columns = {"anchor": "sentence1", "positive": "sentence2"} if shape == "scored" else {}
    recipe = {
        "task": "embedding",
        "model": "tiny-bert",
        "data": {
            "train": str(write_jsonl(tmp_path / "train.jsonl", rows[:12])),
            "validation": str(write_jsonl(tmp_path / "validation.jsonl", rows[12:])),
            **columns,
            **data,
        },
        "training": {
            "max_steps": 2,
            "learning_rate": 1e-3,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,
        },
        "output_dir": str(tmp_path / "run"),
    }
    return llmkit.finetune(recipe).output_dir


def tiny_bert_embeddings(folder: Path | str, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)


@pytest.mark.parametrize(
    ("shape", "loss", "keys"),
    [
        ("pairs", "multiple_negatives_ranking", RETRIEVAL_KEYS),
        ("triplets", "multiple_negatives_ranking", RETRIEVAL_KEYS),
        ("scored", "cosent", STS_KEYS),
    ],
)
def test_training_changes_the_model_and_saves_a_folder_sentence_transformers_loads(
    tmp_path: Path, shape: str, loss: str, keys: set[str]
) -> None:
    import torch
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from llmkit.models.resolve import resolve_model

    run = train(tmp_path, shape)
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert keys <= set(metrics), sorted(metrics)
    assert all(-1 <= metrics[key] <= 1 for key in keys)
    assert f"loss: {loss}" in (run / "recipe.yaml").read_text(encoding="utf-8")  # what auto chose, saved
    assert (run / "modules.json").is_file() and (run / "1_Pooling").is_dir()

    probe = [POSITIVE[0], NEGATIVE[0]]
    trained, base = tiny_bert_embeddings(run, probe), tiny_bert_embeddings(resolve_model("tiny-bert"), probe)
    assert trained.shape == base.shape
    assert not np.allclose(trained, base, atol=1e-4), "two steps at lr 1e-3 left the embeddings as they were"
    arguments = torch.load(run / "training_args.bin", weights_only=False)
    in_batch = (
        BatchSamplers.NO_DUPLICATES if loss == "multiple_negatives_ranking" else BatchSamplers.BATCH_SAMPLER
    )
    assert arguments.batch_sampler == in_batch


def test_data_loss_angle_and_triplet_override_the_choice(tmp_path: Path) -> None:
    run = train(tmp_path / "angle", "scored", loss="angle")
    assert "loss: angle" in (run / "recipe.yaml").read_text(encoding="utf-8")
    run = train(tmp_path / "triplet", "triplets", loss="triplet")
    assert "loss: triplet" in (run / "recipe.yaml").read_text(encoding="utf-8")


def test_evaluate_and_predict_reproduce_the_run_through_the_same_code_path(tmp_path: Path, run_cli) -> None:
    run = train(tmp_path, "scored")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    validation = tmp_path / "validation.jsonl"
    result = run_cli("evaluate", run, "--data", validation, "--output", tmp_path / "ev", "--resamples", "10")
    assert result.exit_code == 0, result.stderr
    scored = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))["models"][0]
    for key in (*STS_KEYS, "eval_loss"):
        assert scored["metrics"][key] == metrics[key], key
    for key in STS_KEYS:  # the correlations recomputed on resampled pairs
        low, high = scored["intervals"][key]
        assert low <= metrics[key] <= high, (key, low, high)

    result = run_cli("predict", "-m", run, "-i", validation)
    assert result.exit_code == 0, result.stderr
    predicted = [json.loads(line) for line in result.stdout.splitlines()]
    rows = [json.loads(line) for line in validation.read_text(encoding="utf-8").splitlines()]
    first = tiny_bert_embeddings(run, [row["sentence1"] for row in rows])
    second = tiny_bert_embeddings(run, [row["sentence2"] for row in rows])
    cosine = (first * second).sum(axis=1) / np.linalg.norm(first, axis=1) / np.linalg.norm(second, axis=1)
    assert [row["similarity"] for row in predicted] == pytest.approx(cosine.tolist(), abs=1e-5)
    assert similarity_correlations(cosine, [row["score"] for row in rows])["spearman"] == pytest.approx(
        metrics["eval_spearman"], abs=1e-5
    )


# -- the metrics, by hand ------------------------------------------------------------------------------
def test_retrieval_scores_equal_a_hand_computation() -> None:
    similarities = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # relevant {0}: rank 1
            [0.8, 0.7, 0.1, 0.0],  # relevant {1}: rank 2
            [0.5, 0.6, 0.7, 0.1],  # relevant {3}: rank 4
            [0.1, 0.9, 0.8, 0.0],  # relevant {0, 2}: ranks 3 and 2
        ]
    )
    scores = retrieval_scores(similarities, [{0}, {1}, {3}, {0, 2}])
    ndcg_last = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert scores["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 2) / 4)
    assert scores["recall_at_1"] == pytest.approx((1 + 0 + 0 + 0) / 4)
    assert scores["recall_at_10"] == pytest.approx(1.0)
    assert scores["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(5) + ndcg_last) / 4)


def test_retrieval_beyond_rank_ten_counts_nothing() -> None:
    similarities = np.arange(12, dtype=float)[None, :]  # column 0 is the least similar: rank 12
    assert retrieval_scores(similarities, [{0}]) == {
        "mrr_at_10": 0.0,
        "ndcg_at_10": 0.0,
        "recall_at_1": 0.0,
        "recall_at_10": 0.0,
    }


def test_similarity_correlations_equal_a_hand_computation() -> None:
    predicted, gold = [0.1, 0.4, 0.35, 0.8], [1.0, 2.0, 3.0, 4.0]
    # Spearman: ranks (1, 3, 2, 4) against (1, 2, 3, 4): 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    x, y = np.array(predicted) - np.mean(predicted), np.array(gold) - np.mean(gold)
    pearson = (x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum())
    assert similarity_correlations(predicted, gold) == pytest.approx({"spearman": 0.8, "pearson": pearson})
    assert similarity_correlations([0.5, 0.5], [1.0, 2.0]) == {"pearson": 0.0, "spearman": 0.0}


class FixedVectors:
    """A stand-in model whose embedding of each text is given."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode(self, texts: list[str], normalize_embeddings: bool = False, **_: Any) -> np.ndarray:
        found = np.array([self.vectors[text] for text in texts], dtype=float)
        return found / np.linalg.norm(found, axis=1, keepdims=True) if normalize_embeddings else found


def test_retrieval_queries_the_deduplicated_positives_and_negatives_of_the_split() -> None:
    from datasets import Dataset

    from llmkit.data.section import COMMON_DATA_DEFAULTS

    task = EmbeddingTask({**COMMON_DATA_DEFAULTS, **EmbeddingTask.data_defaults})
    model = FixedVectors({"q1": [1, 0.1], "q2": [0, 1], "p1": [1, 0.1], "p2": [1, 0.05], "n": [0.1, 1]})
    # q1's positive p1 points its way: rank 1; q2's positive p2 comes after the negative n and p1: rank 3
    rows = Dataset.from_dict({"anchor": ["q1", "q2"], "positive": ["p1", "p2"], "negative": ["n", "n"]})
    scores = task.embedding_metrics(model, rows, batch_size=2)
    assert scores["mrr_at_10"] == pytest.approx((1 + 1 / 3) / 2)
    assert scores["recall_at_1"] == pytest.approx(0.5)
    assert scores["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(4)) / 2)


def test_resampled_retrieval_scores_are_the_metrics_of_the_drawn_queries() -> None:
    """`llmkit evaluate`'s vectorized resampling of retrieval units equals the metric on each resample."""
    from llmkit.tasks.embedding import QUERIES, ScoredUnits

    similarities = np.random.default_rng(0).normal(size=(6, 9))
    units = ScoredUnits(QUERIES, retrieval_outcomes(similarities, [{i} for i in range(6)]))
    assert units.metrics() == pytest.approx(retrieval_scores(similarities, [{i} for i in range(6)]))
    draws = np.random.default_rng(1).integers(0, 6, size=(4, 6))
    counts = np.stack([np.bincount(draw, minlength=6) for draw in draws]).astype(float)
    vectorized = units.on_counts(counts)
    for number, draw in enumerate(draws):
        assert {key: values[number] for key, values in vectorized.items()} == pytest.approx(
            units.metrics(draw)
        )


# -- bad input: one line naming the file, row and column -------------------------------------------------
def finetune_error(
    run_cli, tmp_path: Path, rows: list[dict[str, Any]], *settings: str, kind: str = "jsonl"
) -> str:
    if kind == "csv":  # text cells: a score that is no number reaches the task's own check
        train = write_csv(tmp_path / "train.csv", list(rows[0]), [list(row.values()) for row in rows])
    else:
        train = write_jsonl(tmp_path / "train.jsonl", rows)
    result = run_cli(
        "finetune", "task=embedding", "model=tiny-bert", f"data.train={train}",
        f"output_dir={tmp_path / 'r'}", "data.validation_split=0.25", *settings,
    )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


def test_bad_input_is_one_line_naming_the_file_row_and_column(tmp_path: Path, run_cli) -> None:
    pairs = [pair_row(i, "pairs") for i in range(8)]
    missing = finetune_error(run_cli, tmp_path, pairs, "data.positive=passage")
    assert "train.jsonl" in missing and "no column 'passage' (set by data.positive)" in missing

    scored = [pair_row(i, "scored") for i in range(8)]
    scored[5]["score"] = "high"
    columns = ("data.anchor=sentence1", "data.positive=sentence2")
    bad_score = finetune_error(run_cli, tmp_path, scored, *columns, kind="csv")
    assert "train.csv line 7" in bad_score and "score 'high' in column 'score'" in bad_score

    assert "no column 'sim'" in finetune_error(run_cli, tmp_path, pairs, "data.score=sim")
    assert "data.loss cosent learns from similarity scores" in finetune_error(
        run_cli, tmp_path, pairs, "data.loss=cosent"
    )
    assert "data.loss triplet needs a negative" in finetune_error(
        run_cli, tmp_path, pairs, "data.loss=triplet"
    )
    assert "does not work for task embedding" in finetune_error(run_cli, tmp_path, pairs, "peft.method=lora")
    assert "data.loss must be one of" in finetune_error(run_cli, tmp_path, pairs, "data.loss=contrastive")


# -- llmkit embed and llmkit search -------------------------------------------------------------------------
def test_embed_writes_the_task_vectors_as_npy_and_json_lines(tmp_path: Path, run_cli) -> None:
    run = train(tmp_path, "pairs")
    texts = [*POSITIVE[:3], *NEGATIVE[:2]]
    table = write_jsonl(tmp_path / "texts.jsonl", [{"id": i, "text": text} for i, text in enumerate(texts)])
    expected = tiny_bert_embeddings(run, texts)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)

    result = run_cli("embed", "-m", run, "-i", table, "-o", tmp_path / "vectors.npy")
    assert result.exit_code == 0, result.stderr
    assert f"5 embeddings of {expected.shape[1]} dimensions" in result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "vectors.npy"), expected, atol=1e-5)

    result = run_cli("embed", "-m", run, "-i", table)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["id"] for row in rows] == list(range(5))  # each row as it is, plus its embedding
    np.testing.assert_allclose(np.array([row["embedding"] for row in rows]), expected, atol=1e-5)

    for args, message in [
        (("-i", table, "--column", "sentence"), "no column 'sentence' (--column); columns are: id, text"),
        (("-i", table, "-o", tmp_path / "vectors.csv"), "write .jsonl"),
        (("-i", tmp_path / "missing.jsonl"), "does not exist"),
    ]:
        result = run_cli("embed", "-m", run, *args)
        assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
        assert message in result.stderr, result.stderr


def test_search_ranks_the_corpus_by_cosine_similarity(tmp_path: Path, run_cli) -> None:
    run = train(tmp_path, "pairs")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(NEGATIVE[:6]) + "\n", encoding="utf-8")
    queries = [POSITIVE[2], NEGATIVE[3]]
    result = run_cli("search", *queries, "--corpus", corpus, "-m", run, "-k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]

    vectors = tiny_bert_embeddings(run, [*queries, *NEGATIVE[:6]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors[:2] @ vectors[2:].T
    for answer, query, row_scores in zip(answers, queries, scores, strict=True):
        best = np.argsort(-row_scores, kind="stable")[:3]
        assert answer["query"] == query
        assert [hit["row"]["text"] for hit in answer["results"]] == [NEGATIVE[i] for i in best]
        assert [hit["line"] for hit in answer["results"]] == [f"line {i + 1}" for i in best]
        assert [hit["score"] for hit in answer["results"]] == pytest.approx(row_scores[best], abs=1e-5)
    assert answers[1]["results"][0]["row"]["text"] == NEGATIVE[3]  # a text finds itself first

    plain = run_cli("search", NEGATIVE[3], "--corpus", corpus, "-m", run, "-k", "1")
    assert plain.stdout.splitlines()[1].endswith(NEGATIVE[3])
    assert "--top-k 0" in run_cli("search", "x", "--corpus", corpus, "-m", run, "-k", "0").stderr
    assert "at least one query" in run_cli("search", "--corpus", corpus, "-m", run).stderr


def test_a_sentence_transformers_folder_without_a_recipe_is_an_embedding_model(
    tmp_path: Path, run_cli
) -> None:
    """A folder of sentence-transformers' own (modules.json, no recipe.yaml): predict and evaluate take it as
    an embedding model, as the untrained baseline of a run."""
    run = train(tmp_path, "scored")
    bare = tmp_path / "bare"
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(str(run), device="cpu").save_pretrained(str(bare))
    assert not (bare / "recipe.yaml").exists()
    validation = tmp_path / "validation.jsonl"
    columns = ("data.anchor=sentence1", "data.positive=sentence2")
    result = run_cli("evaluate", bare, "--data", validation, *columns, "--output", tmp_path / "ev")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    scored = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))["models"][0]
    assert scored["metrics"]["eval_spearman"] == pytest.approx(metrics["eval_spearman"], abs=1e-6)
