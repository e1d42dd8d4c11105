"""Reward modelling: a sequence classifier with one output learns to score the chosen reply above the
rejected one (the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)``), on TRL's ``RewardTrainer``.

Rows are the preference task's (:class:`llmkit.tasks.preference.PairedRowsTask`: ``{prompt, chosen,
rejected}`` as ``text``, ``chat`` or ``hh``, the same checks and budgets); each reply is scored together
with its prompt, both rendered through the chat template (``data.use_chat_template``; by default llmkit's
documented one, since the default model, MiniLM, is an encoder without a template of its own). An encoder
classifies from its ``[CLS]`` token, so its sequences are framed as in pre-training (``[CLS] ... [SEP]``) and
its separator ends each turn where a decoder's template puts its end-of-sequence token; a decoder scores
the last token. llmkit tokenizes the pairs into TRL's format (``chosen_ids``, ``rejected_ids``: whole
sequences).

Metrics, per pair and computed in the evaluation loop (so ``llmkit evaluate`` reproduces and resamples them):
``reward_accuracy`` (chosen scored above rejected, as the preference task names it), ``reward_margin`` (the
mean of chosen minus rejected score) and the mean scores of each side. ``llmkit predict`` scores each row's
reply: ``score`` for rows with ``data.completion``, ``chosen_score`` and ``rejected_score`` for pairs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log
from llmkit.data.files import Split, column_values, require_columns
from llmkit.models.adaptation import model_config_dict, saved_recipe
from llmkit.tasks import inference_data
from llmkit.tasks.base import length_ordered_batches
from llmkit.tasks.preference import DROPPED, PairedRowsTask, encode_pair

if TYPE_CHECKING:
    from pathlib import Path

    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: What ``predict`` adds: a single reply's score, or both of a pair's.
SCORE, CHOSEN_SCORE, REJECTED_SCORE = "score", "chosen_score", "rejected_score"
#: TRL's training-log names -> llmkit's (the evaluation's come from ``compute_metrics`` under these names).
TRAIN_METRIC_NAMES = {"accuracy": "reward_accuracy", "margin": "reward_margin"}
PREDICT_BATCH_SIZE = 16


class RewardModelTask(PairedRowsTask):
    name = "reward-model"
    default_model = "minilm-l6"
    pipeline_task = "text-classification"
    headline_metric = "reward_accuracy"
    prediction_keys = (SCORE, CHOSEN_SCORE, REJECTED_SCORE)
    data_defaults: ClassVar[dict[str, Any]] = {
        **PairedRowsTask.data_defaults,
        "use_chat_template": False,  # true: the model's own template (a chat model's), saved with the run
    }
    training_defaults: ClassVar[dict[str, Any]] = {
        "per_device_train_batch_size": 8,  # pairs: two sequences each
        "per_device_eval_batch_size": 16,
        "learning_rate": 3e-5,
        "gradient_checkpointing": False,  # TRL's configs default it on; llmkit leaves it to the recipe
        "eval_on_start": True,  # the untrained head's accuracy too (eval_before_*)
    }

    # -- data -------------------------------------------------------------------------------------
    def check_inputs(self, split: Split) -> None:
        """A prompt and something to score: a pair, or a single reply (``data.completion``)."""
        super().check_inputs(split)
        columns = split.dataset.column_names
        pair = {"chosen": self.data["chosen"], "rejected": self.data["rejected"]}
        single = self.data["completion"] in columns
        if any(name in columns for name in pair.values()) or (not single and split.role != "test"):
            require_columns(split, pair)  # a pair's replies are checked with the pair (check_data)
            return
        if not single:
            raise LlmkitError(
                f"{split.origin}: no reply to score: give a column '{self.data['completion']}' "
                f"(data.completion), or '{self.data['chosen']}' and '{self.data['rejected']}' "
                f"(data.chosen, data.rejected) for pairs"
            )
        for index, value in enumerate(column_values(split.dataset, self.data["completion"])):
            self.reply_text(value, split, index, "completion")

    # -- encoding ---------------------------------------------------------------------------------
    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """An encoder has no end-of-sequence token: its separator ends each turn (saved with the run)."""
        if tokenizer.eos_token is None and tokenizer.sep_token is not None:
            tokenizer.eos_token = tokenizer.sep_token
        super().prepare_tokenizer(tokenizer)

    def scored_sequences(
        self,
        tokenizer: PreTrainedTokenizerBase,
        template: str,
        messages: list[dict[str, str]],
        replies: list[str],
    ) -> tuple[list[list[int]], int]:
        """Each reply after its prompt, as the model reads it, and how the row was cut (``truncation``)."""
        frame = len(framed(tokenizer, []))
        budget = {**self.data, "max_length": self.data["max_length"] - frame}
        pair = encode_pair(tokenizer, template, messages, replies, budget)
        if pair["truncation"] == DROPPED:
            return [], DROPPED
        keys = ("chosen_ids", "rejected_ids")[: len(replies)]
        if not all(pair[key] for key in keys):
            raise LlmkitError(
                "the chat template renders a reply as no text, so nothing would be scored; "
                "set data.use_chat_template=false for llmkit's"
            )
        return [framed(tokenizer, pair["prompt_ids"] + pair[key]) for key in keys], pair["truncation"]

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        from datasets import Dataset

        template = self.chat_template(tokenizer)
        keys = self.reply_columns(dataset.column_names)
        names = ["chosen_ids", "rejected_ids"] if len(keys) == 2 else ["completion_ids"]
        columns: dict[str, list] = {name: [] for name in [*names, "truncation"]}
        for row in dataset:
            messages = self.prompt_messages(row[self.data["prompt"]])
            replies = [self.reply_text(row[self.data[key]], None, 0, key) for key in keys]
            sequences, truncation = self.scored_sequences(tokenizer, template, messages, replies)
            for name, ids in zip(names, sequences or [[]] * len(names), strict=True):
                columns[name].append(ids)
            columns["truncation"].append(truncation)
        return Dataset.from_dict(columns)

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        from trl.trainer.reward_trainer import DataCollatorForPreference

        return DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)

    def example_lengths(self, encoded: Dataset) -> list[int]:
        """Tokens of the longer sequence of each pair, for `llmkit validate`."""
        return [
            max(len(c), len(r)) for c, r in zip(encoded["chosen_ids"], encoded["rejected_ids"], strict=True)
        ]

    def describe_example(self, batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """A collated batch holds its chosen sequences first, then the rejected ones."""
        half = len(batch["input_ids"]) // 2
        lines = []
        for name, row in (("chosen", 0), ("rejected", half)):
            ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
            lines.append(f"{name} ({len(ids)} tokens, scored as one sequence): {tokenizer.decode(ids)!r}")
        return lines

    # -- model ------------------------------------------------------------------------------------
    def check_model(self, model_path: Path) -> None:
        """A model transformers can put a one-score head on, whose context holds ``data.max_length``."""
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

        config = model_config_dict(model_path)
        model_type = config.get("model_type", "?")
        if model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
            raise LlmkitError(
                f"model {model_path}: model type '{model_type}' has no sequence-classification head in "
                f"transformers, so it cannot score replies; use an encoder (minilm-l6) or a causal LM"
            )
        context = config.get("max_position_embeddings") or config.get("n_positions")
        if isinstance(context, int) and self.data["max_length"] > context:
            raise LlmkitError(
                f"data.max_length={self.data['max_length']} is longer than the model's context "
                f"({context} positions); set data.max_length={context} or less"
            )

    def auto_class(self) -> type:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def model_kwargs(self) -> dict[str, Any]:
        # one score a sequence; a classifier checkpoint with other labels gets a new head
        return {"num_labels": 1, "ignore_mismatched_sizes": True}

    def peft_task_type(self) -> str | None:
        return "SEQ_CLS"  # peft then trains and saves the new score head in full

    def loss_targets(self) -> tuple[str, ...]:
        return ()  # TRL's loss is a mean over pairs, divided by the accumulation by the Trainer

    def trainer_class(self) -> type:
        return reward_trainer_class()

    def arguments_class(self) -> type:
        from trl import RewardConfig

        return RewardConfig

    # -- evaluation ---------------------------------------------------------------------------------
    def compute_metrics(self):
        """Per pair: the share scored the right way round and the mean margin (the prediction step gives
        each pair's two scores, chosen first)."""
        import numpy as np

        def compute(prediction: Any) -> dict[str, float]:
            scores = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 2)
            margins = scores[:, 0] - scores[:, 1]
            return {
                "reward_accuracy": float((margins > 0).mean()),
                "reward_margin": float(margins.mean()),
                "reward_chosen": float(scores[:, 0].mean()),
                "reward_rejected": float(scores[:, 1].mean()),
            }

        return compute

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Each row's reply scored (pairs: both); a row whose last user turn alone is over
        ``data.max_prompt_length`` scores None (counted)."""
        keys = self.reply_columns(list(rows[0])) if rows else ()
        names = (CHOSEN_SCORE, REJECTED_SCORE) if len(keys) == 2 else (SCORE,)
        conversations = [
            (
                self.prompt_messages(row[self.data["prompt"]]),
                [self.reply_text(row[self.data[key]], None, 0, key) for key in keys],
            )
            for row in rows
        ]
        return [
            dict.fromkeys(names)
            if scores is None
            else {n: round(s, 6) for n, s in zip(names, scores, strict=True)}
            for scores in self.score_replies(model, tokenizer, conversations)
        ]

    def score_replies(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        conversations: Sequence[tuple[list[dict[str, str]], list[str]]],
    ) -> list[list[float] | None]:
        """Each prompt's replies scored after it, rendered and framed as the model was trained (its chat
        template, ``data.max_length``): `llmkit predict` and a GRPO reward (``{model: RUN}``) score so. None
        for a prompt whose last user turn alone is over ``data.max_prompt_length`` (counted)."""
        template = self.chat_template(tokenizer)
        sequences: list[list[int]] = []
        owners: list[int] = []
        for number, (messages, replies) in enumerate(conversations):
            found, _ = self.scored_sequences(tokenizer, template, messages, replies)
            sequences += found
            owners += [number] * len(found)
        results: list[list[float] | None] = [None] * len(conversations)
        for owner, score in zip(owners, score_sequences(model, tokenizer, sequences), strict=True):
            results[owner] = [*(results[owner] or []), score]
        unscored = results.count(None)
        if unscored:
            log(
                f"{unscored} row(s) not scored: the last user turn is over the reward model's "
                f"data.max_prompt_length={self.data['max_prompt_length']} tokens"
            )
        return results

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        """Each pair's last user turn and its two scores; the reference is which one should win."""
        samples = []
        for row, scored in zip(rows, self.predict(model, tokenizer, rows), strict=True):
            shown = ", ".join(f"{key}: {value:.3f}" for key, value in scored.items() if value is not None)
            last = self.prompt_messages(row[self.data["prompt"]])[-1]["content"]
            samples.append({"input": last, "prediction": shown, "reference": "chosen above rejected"})
        return samples


def frames_with_specials(tokenizer: PreTrainedTokenizerBase) -> bool:
    """An encoder (a tokenizer with a [CLS] token) reads sequences framed as in pre-training."""
    return tokenizer.cls_token_id is not None


def framed(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """``[CLS] ids [SEP]`` for an encoder, whose classifier reads the [CLS] position; a decoder's ids as they
    are (it scores the last token)."""
    if not frames_with_specials(tokenizer):
        return ids
    end = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
    return [tokenizer.cls_token_id, *ids, *end]


def score_sequences(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sequences: list[list[int]]
) -> list[float]:
    """The model's score of each token sequence, in order (batched shortest first, padded to the right)."""
    import torch

    model.eval()
    scores = [0.0] * len(sequences)
    for batch in length_ordered_batches([len(ids) for ids in sequences], PREDICT_BATCH_SIZE):
        padded = tokenizer.pad({"input_ids": [sequences[i] for i in batch]}, return_tensors="pt")
        with torch.no_grad():
            logits = model(**padded.to(model.device)).logits.float()
        for i, score in zip(batch, logits[:, 0].tolist(), strict=True):
            scores[i] = score
    return scores


# -- a run as a scorer (GRPO's {model: RUN} reward) --------------------------------------------------------
#: What an error refusing a folder asks for instead.
A_REWARD_RUN = "give the output_dir of a run trained with task: reward-model"


def reward_run_task(folder: Path, where: str) -> RewardModelTask:
    """The task of a reward-model run folder, with the data settings it saved (how it renders replies), as
    `llmkit predict` reads it; one line naming ``where`` when the folder is not such a run."""
    if not folder.is_dir():
        raise LlmkitError(
            f"{where}: no folder {folder}; {A_REWARD_RUN} (a path relative to the recipe's folder)"
        )
    recipe = saved_recipe(folder)
    if recipe is None:
        raise LlmkitError(
            f"{where}: {folder} is not a reward-model run (no readable recipe.yaml): {plain_model(folder)}; "
            f"{A_REWARD_RUN}"
        )
    task = recipe.get("task", "classification")
    if task != RewardModelTask.name:
        raise LlmkitError(
            f"{where}: {folder} is a {task} run, not a reward-model run (its model does not give one score a "
            f"reply); {A_REWARD_RUN}"
        )
    return RewardModelTask(inference_data(RewardModelTask, recipe.get("data")))


def plain_model(folder: Path) -> str:
    """What a folder without a run's recipe holds, for the error refusing it: a one-score head is not enough,
    since how its replies were rendered is not known."""
    try:
        config = model_config_dict(folder)
    except (OSError, ValueError):
        return "not a model folder either"
    architectures = config.get("architectures") or [config.get("model_type", "an unknown model")]
    one_score = len(config.get("id2label") or {}) == 1 and str(architectures[0]).endswith(
        "ForSequenceClassification"
    )
    if one_score:
        return f"a plain {architectures[0]} with one score, but how it reads replies is not known"
    return f"a plain {architectures[0]}, without a single score"


@dataclass
class ReplyScorer:
    """A reward-model run loaded once, as `llmkit predict` loads it (its own tokenizer and template, in eval
    mode), to score replies through :meth:`RewardModelTask.score_replies`."""

    task: RewardModelTask
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel

    @classmethod
    def load(cls, folder: Path, task: RewardModelTask) -> ReplyScorer:
        from llmkit.models.resolve import check_weights, load_for_inference, load_tokenizer, resolve_model

        folder = resolve_model(str(folder))
        tokenizer = load_tokenizer(folder)
        model = load_for_inference(task, folder, **check_weights(folder, exported=True))
        return cls(task, tokenizer, model)

    def score(self, prompts: Sequence[list[dict[str, str]]], replies: Sequence[str]) -> list[float | None]:
        """Each reply's score after its prompt (chat messages); None where the prompt is too long to score."""
        conversations = [
            (messages, [self.task.trained_reply(reply)])
            for messages, reply in zip(prompts, replies, strict=True)
        ]
        scores = self.task.score_replies(self.model, self.tokenizer, conversations)
        return [None if found is None else found[0] for found in scores]


def reward_trainer_class() -> type:
    """TRL's RewardTrainer on llmkit's encoded pairs; an evaluation pass gives each pair's two scores to
    ``compute_metrics`` (per pair, not TRL's batch means), and its training logs use llmkit's names."""
    import torch
    from trl import RewardTrainer

    class LlmkitRewardTrainer(RewardTrainer):
        def __init__(self, model, args, train_dataset, eval_dataset=None, **kwargs: Any) -> None:
            args.max_length = None  # llmkit cut the pairs to data.max_length; TRL would drop longer ones
            super().__init__(
                model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs
            )

        def _send_telemetry(self) -> None:
            return

        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            return  # llmkit writes its own

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            """The loss, each pair's (chosen, rejected) scores, and its label: 0, the chosen one's index."""
            loss, logits, _ = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            self._metrics["eval"].clear()  # the evaluation's scores are compute_metrics', per pair
            if logits is None:
                return loss, None, None
            logits = logits[0] if isinstance(logits, tuple) else logits
            chosen, rejected = logits.squeeze(-1).float().chunk(2)
            pairs = torch.stack((chosen, rejected), dim=-1)
            return loss, pairs, torch.zeros(len(pairs), dtype=torch.long, device=pairs.device)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            store = self._metrics["train"]
            self._metrics["train"] = defaultdict(
                list, {TRAIN_METRIC_NAMES.get(key, key): values for key, values in store.items()}
            )
            super().log(logs, start_time)

    return LlmkitRewardTrainer
