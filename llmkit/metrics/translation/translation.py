"""Corpus BLEU and chrF of translations, as sacreBLEU computes them (an offline evaluate module).

Both are sacreBLEU's own scores on a 0-100 scale, over the whole corpus (BLEU is not a mean of sentence
scores): BLEU with its defaults (13a tokenization, case-sensitive, exponential smoothing), chrF with its
defaults (character 6-grams, beta 2, no word n-grams). Each prediction has one reference.
"""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "sacreBLEU's corpus BLEU and chrF (0-100) of predictions against one reference each."
_KWARGS = """
predictions (list of str): translations.
references (list of str): one reference translation per prediction.
tokenize (str): BLEU's tokenizer, as sacreBLEU names them (default "13a"; "intl", "zh", "ja-mecab", ...).
lowercase (bool): compare lower-cased texts (default false).
Returns: {"bleu": float, "chrf": float}.
"""


class Translation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018.",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False):
        if not predictions:
            return {"bleu": 0.0, "chrf": 0.0}
        streams = [list(references)]  # sacreBLEU takes references as streams: one stream, one per prediction
        bleu = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase).corpus_score(predictions, streams)
        chrf = sacrebleu.CHRF(lowercase=lowercase).corpus_score(predictions, streams)
        return {"bleu": float(bleu.score), "chrf": float(chrf.score)}
