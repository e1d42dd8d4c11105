"""Entity-level precision, recall and F1 with the seqeval package (an offline evaluate module).

An entity counts as found only when its type and its whole span match (CoNLL's conlleval scoring, IOB2 or
IOB1 tags). The scores are overall (micro over entities) and per entity type, with the token accuracy.
"""

import datasets
import evaluate

_DESCRIPTION = "CoNLL entity scores: an entity is right when its type and every token of its span are."
_KWARGS = """
predictions (list of list of str): predicted tags per sentence, e.g. [["B-PER", "I-PER", "O"]].
references (list of list of str): true tags, of the same lengths.
Returns: {"precision", "recall", "f1", "accuracy": float in [0, 1],
          "per_type": {TYPE: {"precision", "recall", "f1", "number"}}}.
"""


class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references):
        from seqeval.metrics import accuracy_score, classification_report

        report = classification_report(references, predictions, output_dict=True, zero_division=0)
        overall = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
        per_type = {
            name: {
                "precision": float(scores["precision"]),
                "recall": float(scores["recall"]),
                "f1": float(scores["f1-score"]),
                "number": int(scores["support"]),
            }
            for name, scores in report.items()
            if not name.endswith(" avg")
        }
        return {
            "precision": float(overall["precision"]),
            "recall": float(overall["recall"]),
            "f1": float(overall["f1-score"]),
            "accuracy": float(accuracy_score(references, predictions)) if references else 0.0,
            "per_type": per_type,
        }
