"""An ONNX graph behind a transformers model's call, so the tasks' ``predict`` and `llmkit evaluate`'s
Trainer run an exported folder (:mod:`llmkit.models.exported`) as they run the PyTorch model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Heads whose loss the runner computes when a batch has labels (`llmkit evaluate`), by architecture suffix.
LOSSES = ("ForSequenceClassification", "ForTokenClassification")


class OnnxModel(torch.nn.Module):
    """``model(input_ids=..., attention_mask=...)`` -> an output with ``.logits`` (a float tensor on the CPU),
    from the graph at ``path`` run by ``session`` (:func:`llmkit.models.exported.onnx_session`).

    A torch Module holding no parameters, so the Trainer that `llmkit evaluate` runs accepts it. Inputs the
    graph does not take are dropped (a tokenizer's token_type_ids for a graph without them), ones it takes
    but the batch lacks are zeros; outputs keep the graph's names. ``.config`` is the folder's config.json
    (labels, problem type, thresholds), ``.device`` the CPU, where inputs must be.
    """

    def __init__(self, path: Path, session: Any) -> None:
        super().__init__()
        from transformers import AutoConfig

        self.path = Path(path)
        self.config = AutoConfig.from_pretrained(self.path.parent)
        self.session = session  # an onnxruntime.InferenceSession of ``path``
        self.input_names = [item.name for item in self.session.get_inputs()]
        self.output_names = [item.name for item in self.session.get_outputs()]
        architectures = self.config.architectures or []
        self.loss_name = next((s for s in LOSSES if any(a.endswith(s) for a in architectures)), None)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        return self  # onnxruntime runs it on the CPU, and the inputs stay there (``model.device``)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> Any:
        from transformers.utils import ModelOutput

        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {}
        for name in self.input_names:
            value = given.get(name)
            if value is None:
                value = (
                    torch.ones_like(input_ids) if name == "attention_mask" else torch.zeros_like(input_ids)
                )
            feed[name] = value.detach().cpu().numpy().astype(np.int64, copy=False)
        arrays = self.session.run(None, feed)
        result = {
            name: torch.from_numpy(np.ascontiguousarray(array)).float()
            for name, array in zip(self.output_names, arrays, strict=True)
        }
        if labels is not None and self.loss_name is not None:
            from transformers.loss.loss_utils import LOSS_MAPPING

            loss = LOSS_MAPPING[self.loss_name]
            logits, labels = result["logits"], labels.cpu()
            if self.loss_name == "ForSequenceClassification":
                result = {"loss": loss(labels, logits, self.config), **result}
            else:
                result = {"loss": loss(logits, labels, self.config), **result}
        return ModelOutput(result)
