"""ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures (an offline evaluate module over ``rouge-score``).

Scores are the plain mean of per-example F-measures (fractions in [0, 1]), so they are deterministic and
can be accumulated batch by batch (``use_aggregator=False`` returns the per-example lists). ROUGE-Lsum is
the summary-level LCS over sentences: sentences are split at newlines and after ``.``, ``!`` or ``?``
followed by white space (a rule that needs no NLTK data, unlike ``rouge-score``'s ``split_summaries``).
Texts are lower-cased and reduced to alphanumeric tokens by ``rouge-score``; ``use_stemmer`` (default
true, as in transformers' summarization examples) applies the Porter stemmer.
"""

import re

import datasets
import evaluate
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

_DESCRIPTION = "ROUGE F-measures between generated and reference summaries, averaged over examples."
_KWARGS = """
predictions (list of str): generated summaries.
references (list of str): one reference summary per prediction.
rouge_types (list of str): subset of rouge1, rouge2, rougeL, rougeLsum (default: all four).
use_stemmer (bool): Porter-stem tokens before matching (default true).
use_aggregator (bool): true (default) returns the mean F-measure per type; false a list per type.
Returns: {"rouge1": float, "rouge2": float, "rougeL": float, "rougeLsum": float}.
"""


def sentences_on_lines(text):
    """One sentence a line: what ROUGE-Lsum treats as the summary's sentence boundaries."""
    return "\n".join(part.strip() for part in SENTENCE_END.split(text.strip()) if part.strip())


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004.",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=True, use_aggregator=True):
        rouge_types = list(rouge_types or ROUGE_TYPES)
        unknown = sorted(set(rouge_types) - set(ROUGE_TYPES))
        if unknown:
            raise ValueError(f"unknown rouge types {unknown}; choose from {', '.join(ROUGE_TYPES)}")
        scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer)
        per_example = {rouge_type: [] for rouge_type in rouge_types}
        for prediction, reference in zip(predictions, references, strict=True):
            scores = scorer.score(sentences_on_lines(reference), sentences_on_lines(prediction))
            for rouge_type in rouge_types:
                per_example[rouge_type].append(scores[rouge_type].fmeasure)
        if not use_aggregator:
            return per_example
        return {
            rouge_type: (sum(values) / len(values) if values else 0.0)
            for rouge_type, values in per_example.items()
        }
