"""A causal LM as a zero-shot classifier: each label scores the likelihood of its verbaliser after a prompt.

``VerbalizerClassifier`` wraps a loaded causal LM and answers like a sequence classifier: ``forward(input_ids,
attention_mask, labels)`` returns classification logits ``[batch, classes]``, so the classification task's
metrics, intervals, error analysis and predictions run on it unchanged (``llmkit.tasks.zero_shot`` builds it
from the recipe's ``data.verbalizer``; nothing here is trained).

The score of class ``c`` for a prompt ``x`` is ``log sum_v exp(sum_j log p(v_j | x, v_<j))`` over the
verbalisers ``v`` of ``c``: the log-likelihood of a verbaliser is the sum over its tokens (not the mean: a
longer verbaliser is a less likely continuation, and that is what the model says), and the several
verbalisers of one class are alternative continuations, so their probabilities add (log-sum-exp). A softmax
over the classes then gives ``p(c | x, the answer is one of the verbalisers)``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Vocabulary logits computed at once (sequences x positions x vocabulary): a batch of prompts is scored in
#: chunks under this, so memory does not grow with the evaluation batch size (SmolLM2: 49k tokens).
LOGIT_BUDGET = 2**25

#: Token ids of each class's verbalisers: ``[class][verbaliser][token]``.
VerbaliserIds = list[list[list[int]]]


class VerbalizerClassifier(torch.nn.Module):
    """Classification logits from a causal LM: each class's verbaliser log-likelihood (see the module doc).

    ``input_ids`` are the rendered prompts, padded on either side: the real tokens are those under
    ``attention_mask``, and each prompt is re-laid right-padded with a verbaliser's tokens after it, so the
    positions the model sees are those of the prompt alone.
    """

    main_input_name = "input_ids"

    def __init__(
        self, language_model: PreTrainedModel, verbalisers: VerbaliserIds, label_names: list[str]
    ) -> None:
        super().__init__()
        if len(verbalisers) != len(label_names) or any(
            not tokens for options in verbalisers for tokens in options
        ):
            raise ValueError("every class needs verbalisers of at least one token")
        self.language_model = language_model
        self.verbalisers = verbalisers
        # the classifier's view of the model: its labels (predictions read id2label), the LM's settings
        self.config = copy.deepcopy(language_model.config)
        self.config.id2label = dict(enumerate(label_names))
        self.config.label2id = {name: index for index, name in enumerate(label_names)}
        self.config.num_labels = len(label_names)
        self.config.problem_type = "single_label_classification"
        # the verbalisers that share all but their last token are scored from one sequence
        self.prefixes = list(
            dict.fromkeys(tuple(tokens[:-1]) for options in verbalisers for tokens in options)
        )

    @property
    def device(self) -> torch.device:
        return next(self.language_model.parameters()).device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        """Logits ``[batch, classes]`` (log-likelihoods); with ``labels``, their cross-entropy as the loss."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        prompts = [ids[row_mask.bool()] for ids, row_mask in zip(input_ids, mask, strict=True)]
        if any(len(prompt) == 0 for prompt in prompts):
            raise ValueError("a prompt has no tokens")
        lengths = torch.tensor([len(prompt) for prompt in prompts], device=input_ids.device)
        token_scores = self._continuation_log_probs(prompts, lengths)
        logits = torch.stack(
            [
                torch.logsumexp(torch.stack([token_scores[tuple(tokens)] for tokens in options]), dim=0)
                for options in self.verbalisers
            ],
            dim=-1,
        )
        loss = torch.nn.functional.cross_entropy(logits, labels.long()) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _continuation_log_probs(
        self, prompts: list[torch.Tensor], lengths: torch.Tensor
    ) -> dict[tuple[int, ...], torch.Tensor]:
        """Each verbaliser's log-likelihood ``[batch]`` after each prompt: prompt + prefix sequences (one per
        distinct prefix, laid out prompt-major), then the log-probability of every verbaliser token read at
        the position before it."""
        sequences = [
            torch.cat([prompt, prompt.new_tensor(prefix)]) for prompt in prompts for prefix in self.prefixes
        ]
        log_probs = self._log_probs_at_positions(sequences, lengths)
        scores = {}
        for options in self.verbalisers:
            for tokens in options:
                prefix = self.prefixes.index(tuple(tokens[:-1]))
                scores[tuple(tokens)] = sum(
                    log_probs[(prefix, step)][:, token] for step, token in enumerate(tokens)
                )
        return scores

    def _log_probs_at_positions(
        self, sequences: list[torch.Tensor], lengths: torch.Tensor
    ) -> dict[tuple[int, int], torch.Tensor]:
        """(prefix, step) -> the next-token log-probabilities ``[batch, vocab]`` at the prompt's last token +
        step in that prefix's sequences; the model runs on right-padded chunks within ``LOGIT_BUDGET``."""
        width = max(len(sequence) for sequence in sequences)
        steps = max(len(prefix) for prefix in self.prefixes) + 1
        vocabulary = self.language_model.get_output_embeddings().weight.shape[0]
        chunk = max(1, LOGIT_BUDGET // (width * vocabulary))
        count = len(self.prefixes)
        # sequence k belongs to prompt k // count and prefix k % count; keep the positions that are read
        wanted = torch.stack([lengths.repeat_interleave(count) - 1 + step for step in range(steps)], dim=1)
        kept = []
        for start in range(0, len(sequences), chunk):
            part = sequences[start : start + chunk]
            ids = torch.zeros(len(part), width, dtype=torch.long, device=part[0].device)
            attention = torch.zeros_like(ids)
            for row, sequence in enumerate(part):
                ids[row, : len(sequence)] = sequence
                attention[row, : len(sequence)] = 1
            logits = self.language_model(input_ids=ids, attention_mask=attention).logits
            positions = wanted[start : start + len(part)].clamp(max=width - 1)
            rows = torch.arange(len(part), device=ids.device).unsqueeze(1)
            kept.append(logits[rows, positions].float().log_softmax(dim=-1))
        gathered = torch.cat(kept)  # [sequences, steps, vocab]
        batch = len(lengths)
        return {
            (prefix, step): gathered.view(batch, count, steps, -1)[:, prefix, step]
            for prefix in range(count)
            for step in range(len(self.prefixes[prefix]) + 1)
        }
