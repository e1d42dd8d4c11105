"""SQuAD exact match and F1 on normalised answer texts (an offline evaluate module).

Normalisation as SQuAD v1.1's official script defines it: lower case, no punctuation, no articles
(a, an, the), single spaces. Each prediction scores its best match among the gold answers; an
unanswerable question (SQuAD 2.0) has the gold answer "" and is right only when the prediction is empty.
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = "SQuAD exact match and token F1 (percentages), best over each question's gold answers."
_KWARGS = """
predictions (list of str): one predicted answer text per question ("" = no answer).
references (list of list of str): the gold answer texts per question ([] = unanswerable).
Returns: {"exact_match": float in [0, 100], "f1": float in [0, 100]}.
"""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """F1 over the normalised words both texts share (with multiplicity); empty vs empty is 1."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references):
        if not predictions:
            return {"exact_match": 0.0, "f1": 0.0}
        exact, f1 = 0.0, 0.0
        for prediction, golds in zip(predictions, references, strict=True):
            golds = list(golds) or [""]
            exact += max(exact_match(prediction, gold) for gold in golds)
            f1 += max(token_f1(prediction, gold) for gold in golds)
        return {"exact_match": 100 * exact / len(predictions), "f1": 100 * f1 / len(predictions)}
