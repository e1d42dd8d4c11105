"""The ``setfit:`` recipe section: train a classifier as SetFit does, checked before anything runs.

``setfit: {iterations: 20}`` (task classification, single-label) trains the model in two stages instead of
end to end: the sentence-transformers body on contrastive pairs of the training rows, then a logistic
regression head on its embeddings (``llmkit.training.setfit`` runs them; the model is
``llmkit.models.sentence_classifier.SentenceClassifier``). Kept apart from that module so that reading a
recipe never imports torch.
"""

from __future__ import annotations

from typing import Any

from llmkit.core.errors import LlmkitError, did_you_mean

#: The head's weights in a SetFit run folder (its presence marks the folder as a SentenceClassifier); named
#: here, apart from the model's module, so that the run folder's list of entries names it without torch.
HEAD_FILE = "classifier_head.safetensors"
#: The ``setfit:`` section: SetFit's two stages instead of fine-tuning a classification head end to end.
SETFIT_DEFAULTS: dict[str, Any] = {
    # contrastive pairs per training row and kind: this many with a row of its class (target 1) and as many
    # with a row of another class (target 0); the body trains on them under training.* settings
    "iterations": 20,
    # the head: scikit-learn's LogisticRegression (SetFit's default head), its inverse regularisation
    # strength and iteration limit
    "head_c": 1.0,
    "head_max_iter": 100,
}


def check_setfit_section(
    raw: Any, task_name: str, peft: dict[str, Any] | None, distill: dict[str, Any] | None, where: str
) -> dict[str, Any] | None:
    """``setfit:`` merged with its defaults (None: no SetFit); every problem one line. Only classification
    trains this way, and it is its own way of adapting the model: not with ``peft:`` nor ``distill:``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise LlmkitError(f"{where}: setfit must be a mapping, e.g. {{iterations: 20}}, or null")
    if task_name != "classification":
        raise LlmkitError(
            f"{where}: setfit trains a classifier and works for task classification only, not {task_name}; "
            f"remove the setfit section"
        )
    for other, section in (("peft", peft), ("distill", distill)):
        if section is not None:
            raise LlmkitError(
                f"{where}: setfit and {other} are two ways to train the model, and they do not combine; "
                f"remove the {other} section or the setfit section"
            )
    settings = dict(SETFIT_DEFAULTS)
    for key, value in raw.items():
        if key not in SETFIT_DEFAULTS:
            raise LlmkitError(
                f"{where}: unknown key 'setfit.{key}'{did_you_mean(str(key), SETFIT_DEFAULTS)}; "
                f"valid keys: {', '.join(SETFIT_DEFAULTS)}"
            )
        settings[key] = value
    for key in ("iterations", "head_max_iter"):
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LlmkitError(f"{where}: setfit.{key} must be a positive integer, got {value!r}")
    value = settings["head_c"]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise LlmkitError(f"{where}: setfit.head_c must be a number above 0, got {value!r}")
    settings["head_c"] = float(value)
    return settings
