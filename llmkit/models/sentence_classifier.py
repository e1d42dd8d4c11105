"""SetFit's model: a sentence-transformers body with a linear head, answering like a sequence classifier.

``SentenceClassifier`` wraps a ``SentenceTransformer`` and a ``torch.nn.Linear``: ``forward(input_ids,
attention_mask, labels)`` returns classification logits ``[batch, classes]`` (the head applied to the
sentence embedding), so the classification task's metrics, intervals, error analysis and predictions run on
it unchanged, as they do on the zero-shot ``VerbalizerClassifier``. ``llmkit.training.setfit`` trains it
(``setfit:`` in a recipe): the body on contrastive pairs, then the head as scikit-learn's
LogisticRegression, whose coefficients :func:`head_from_logistic_regression` turns into the Linear exactly.

The saved folder is the body's sentence-transformers folder (``SentenceTransformer(folder)`` loads the body),
its ``config.json`` holding the labels (``id2label``, ``label2id``, ``problem_type``) as any llmkit
classifier's does, plus the head's weights in :data:`HEAD_FILE` (safetensors, not a pickled estimator).

Also here, one home for both users: :func:`load_sentence_transformer`, how llmkit opens a model folder as a
``SentenceTransformer`` (``task: embedding`` loads its models with it).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log
from llmkit.models.setfit_section import HEAD_FILE

if TYPE_CHECKING:
    import numpy as np

CONFIG_FILE = "config.json"
ENCODE_BATCH_SIZE = 64


# -- the body ----------------------------------------------------------------------------------------------
def load_sentence_transformer(path: Path, max_length: int | None, **load_options: Any) -> Any:
    """A ``SentenceTransformer``: the folder's own modules, or (a plain encoder) the encoder with mean
    pooling; its texts are cut at ``max_length`` tokens (None: the folder's own limit), which a saved folder
    keeps."""
    from sentence_transformers import SentenceTransformer

    if not (path / "modules.json").exists():
        log(f"{path} is a plain encoder: sentence embeddings are the mean of its token embeddings")
    model_kwargs = {key: load_options[key] for key in ("dtype", "use_safetensors") if key in load_options}
    model = SentenceTransformer(
        str(path),
        device="cpu",  # the Trainer (or inference) places it
        local_files_only=True,
        trust_remote_code=bool(load_options.get("trust_remote_code")),
        model_kwargs={key: value for key, value in model_kwargs.items() if value is not None},
    )
    if max_length is not None:
        model.max_seq_length = max_length
    return model


# -- the classifier ----------------------------------------------------------------------------------------
class SentenceClassifier(torch.nn.Module):
    """Classification logits ``head(embedding)`` from a sentence-transformers body (see the module doc)."""

    main_input_name = "input_ids"

    def __init__(self, body: Any, label_names: list[str]) -> None:
        super().__init__()
        self.body = body
        # sentence-transformers 6 renamed get_sentence_embedding_dimension, which 5 has alone
        dimension = getattr(body, "get_embedding_dimension", None) or body.get_sentence_embedding_dimension
        self.head = torch.nn.Linear(dimension(), len(label_names))
        # the classifier's view of the model: its labels (predictions read id2label), the encoder's settings
        self.config = copy.deepcopy(body[0].auto_model.config)
        self.config.id2label = dict(enumerate(label_names))
        self.config.label2id = {name: index for index, name in enumerate(label_names)}
        self.config.problem_type = "single_label_classification"

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        """Logits ``[batch, classes]``; with ``labels``, their cross-entropy as the loss."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        features = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids) if attention_mask is None else attention_mask,
        }
        if token_type_ids is not None:
            features["token_type_ids"] = token_type_ids
        embeddings = self.body(features)["sentence_embedding"]
        logits = self.head(embeddings.to(self.head.weight.dtype))
        loss = torch.nn.functional.cross_entropy(logits, labels.long()) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def embed(self, texts: list[str], batch_size: int = ENCODE_BATCH_SIZE) -> np.ndarray:
        """The body's sentence embeddings (NumPy), as ``forward`` feeds them to the head."""
        return self.body.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

    def set_head(self, weight: np.ndarray, bias: np.ndarray) -> None:
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(weight, dtype=self.head.weight.dtype))
            self.head.bias.copy_(torch.as_tensor(bias, dtype=self.head.bias.dtype))

    def save_pretrained(self, folder: str | Path, **_: Any) -> None:
        """The body's sentence-transformers folder, the labels in its config.json, the head beside it."""
        from safetensors.torch import save_file

        folder = Path(folder)
        self.body.save(str(folder))
        config_file = folder / CONFIG_FILE
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.update(
            id2label={str(index): name for index, name in self.config.id2label.items()},
            label2id=dict(self.config.label2id),
            problem_type=self.config.problem_type,
        )
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        head = {
            name: tensor.detach().float().cpu().contiguous()
            for name, tensor in self.head.state_dict().items()
        }
        save_file(head, str(folder / HEAD_FILE))


def is_sentence_classifier(path: Path) -> bool:
    """A folder SetFit saved: a sentence-transformers body with a head file beside it."""
    return (path / HEAD_FILE).is_file() and (path / "modules.json").is_file()


def load_sentence_classifier(path: Path, **load_options: Any) -> SentenceClassifier:
    """A saved SentenceClassifier: the body as saved (its own max length), the labels and the head."""
    from safetensors.torch import load_file

    config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    names = [str(id2label[str(index)]) for index in range(len(id2label))]
    model = SentenceClassifier(load_sentence_transformer(path, None, **load_options), names)
    head = load_file(str(path / HEAD_FILE))
    if head["weight"].shape != model.head.weight.shape:
        raise LlmkitError(
            f"model folder {path}: {HEAD_FILE} has {head['weight'].shape[0]} classes of "
            f"{head['weight'].shape[1]} dimensions, and config.json {len(names)} labels of an embedding of "
            f"{model.head.in_features}; the folder is inconsistent: train it again"
        )
    model.head.load_state_dict(head)
    return model


def head_from_logistic_regression(classifier: Any) -> tuple[np.ndarray, np.ndarray]:
    """A fitted LogisticRegression as a Linear's weight and bias whose softmax is its ``predict_proba``.

    Several classes (multinomial): ``predict_proba`` is the softmax of ``coef_ x + intercept_`` itself. Two
    classes: scikit-learn keeps one row ``w`` and gives ``[1 - s, s]`` with ``s = sigmoid(w x + b)``; the
    rows ``[0, w]`` (biases ``[0, b]``) give the same through a softmax: ``softmax([0, z]) = [1 - s, s]``.
    """
    import numpy as np

    weight, bias = np.asarray(classifier.coef_), np.asarray(classifier.intercept_)
    if len(classifier.classes_) == 2:
        weight = np.vstack([np.zeros_like(weight[0]), weight[0]])
        bias = np.asarray([0.0, bias[0]])
    return weight, bias
