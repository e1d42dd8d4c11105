"""Preference tuning: teach a chat model to prefer the chosen reply over the rejected one, with TRL; and
what the tasks that learn from such pairs share (:class:`PairedRowsTask`: the reward model's too).

Rows are ``{prompt, chosen, rejected}``; three data shapes, chosen by ``data.format``:

* ``text`` -- the prompt is one user turn, chosen and rejected are the two replies;
* ``chat`` -- the prompt is a list of ``{role, content}`` messages ending with the user's turn; each reply is
  text or a one-message list ``[{role: assistant, content}]`` (TRL's conversational format);
* ``hh`` -- Anthropic HH-RLHF: the prompt is ``\\n\\nHuman: ...\\n\\nAssistant: ...`` turns ending with
  an empty ``\\n\\nAssistant:``, which become chat messages.

Every pair is rendered with the model's chat template by the code the generation task uses
(:func:`llmkit.tasks.causal_lm.conversation_segments`), so SFT, preference tuning and ``llmkit generate
--chat`` see the same text; the reply includes the template's end-of-turn tokens, so the model keeps learning
to stop. llmkit tokenizes (the tokenization cache keeps the pairs) into TRL's pre-tokenized format
(``prompt_ids``, ``chosen_ids``, ``rejected_ids``); a prompt over ``data.max_prompt_length`` tokens keeps its
last turns, replies are cut to fit ``data.max_length``, and pairs whose last user turn alone does not fit are
dropped (both counted).

``preference.method``: ``dpo`` (TRL's DPOTrainer, any of its ``loss_type`` choices; with LoRA the reference is
the base model with the adapter switched off, without it a frozen copy; ``dpo.sft_weight`` adds the chosen
replies' NLL, as RPO does), ``simpo`` (TRL's CPOTrainer with
the SimPO loss and ``cpo_alpha=0``: length-normalised, no reference model), ``orpo`` (TRL's ORPOTrainer: the
chosen reply's NLL plus the odds-ratio term, no reference model) or ``kto`` (TRL's KTOTrainer, reference as
for DPO) on unpaired rows ``{prompt, completion, label}``: a paired file is unpaired (each pair's chosen reply
desirable, its rejected one not). Metrics: reward accuracy (chosen scored above rejected; not for KTO's
unpaired rows), mean reward margin and the chosen/rejected log-probabilities, per evaluated split.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.core.progress import log
from llmkit.data.files import Split, column_values, require_columns
from llmkit.tasks.base import Task
from llmkit.tasks.causal_lm import (
    IGNORE_INDEX,
    carry_chat_template,
    chat_prompt_messages,
    check_causal_lm_length,
    checked_format,
    drop_reference_adapter,
    frozen_reference,
    load_causal_lm,
    render_chat,
    required_chat_template,
    tokenize_segments,
)
from llmkit.tasks.decoding import check_repetition_penalty

if TYPE_CHECKING:
    from pathlib import Path

    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FORMATS = ("auto", "text", "chat", "hh")
METHODS = ("dpo", "simpo", "orpo", "kto")
#: Methods that learn from unpaired rows (prompt, completion, desirable or not); a paired file is unpaired.
UNPAIRED_METHODS = ("kto",)
#: Seed of the one shuffle of a paired file's unpaired rows (KTO trains in a fixed order: ``unpaired_rows``).
UNPAIR_SEED = 0
#: TRL 1.16's DPO losses (DPOConfig.loss_type).
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
#: ``truncation`` column: how a pair was encoded (encoding_metrics counts them, prepare_evaluation drops 2s).
WHOLE, TRUNCATED, DROPPED = 0, 1, 2
HH_TURN = re.compile(r"\n\n(Human|Assistant):")
#: TRL's metric names -> llmkit's (eval_reward_accuracy, ...); other names lose their slashes.
METRIC_NAMES = {
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "logps/chosen": "logp_chosen",
    "logps/rejected": "logp_rejected",
}
REPORT_NEW_TOKENS = 48


class PairedRowsTask(Task):
    """What the tasks that learn from chosen / rejected pairs share (``preference``, ``reward-model``): the
    three row shapes, their checks (a pair that teaches nothing is refused or left out, counted), rendering
    through the chat template and the prompt / reply budgets. Subclasses train on the encoded pairs."""

    target_columns = ("chosen_ids", "rejected_ids")
    data_defaults: ClassVar[dict[str, Any]] = {
        "format": "auto",
        "prompt": "prompt",
        "chosen": "chosen",
        "rejected": "rejected",
        "use_chat_template": True,  # false: llmkit's documented template (a model without one needs it)
        "skip_bad_turns": False,  # hh: true leaves out (and counts) rows whose turns do not alternate
        "skip_identical_pairs": False,  # true: pairs with equal replies are left out (counted), not an error
        "max_length": 512,  # prompt + reply tokens
        "max_prompt_length": 256,  # a longer prompt keeps its last turns
        "completion": "completion",  # a single reply: KTO's unpaired rows, the reward model's rows to score
    }

    def __init__(self, data: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        super().__init__(data, options)
        self.format: str = checked_format(data, FORMATS)
        #: hh pairs left out per split because their transcripts differ before the last assistant turn.
        self.diverged_early: dict[str, int] = {}
        if not 0 < data["max_prompt_length"] < data["max_length"]:
            raise LlmkitError(
                f"data.max_prompt_length={data['max_prompt_length']} must be positive and below "
                f"data.max_length={data['max_length']} (the reply needs room)"
            )

    # -- data -------------------------------------------------------------------------------------
    def check_data(self, splits: dict[str, Split]) -> None:
        if self.format == "auto":
            self.format = self.detect_format(splits["train"])
        for split in splits.values():
            if self.format == "hh" and self.data["prompt"] not in split.dataset.column_names:
                self._split_transcripts(split)
            if self.format == "hh" and self.data["chosen"] in split.dataset.column_names:
                self._skip_early_divergence(split)
            if self.format == "hh" and self.data["skip_bad_turns"]:
                self._skip_bad_turns(split)
            self.check_inputs(split)
            if split.role == "test" and self.data["chosen"] not in split.dataset.column_names:
                continue  # prompts only: predicted
            require_columns(split, {"chosen": self.data["chosen"], "rejected": self.data["rejected"]})
            for key in ("chosen", "rejected"):
                for index, value in enumerate(column_values(split.dataset, self.data[key])):
                    self.reply_text(value, split, index, key)
            self._check_identical(split)

    def detect_format(self, split: Split) -> str:
        require_columns(split, {"prompt": self.data["prompt"]})
        first = split.dataset[0][self.data["prompt"]]
        return "chat" if isinstance(first, list) else "text"

    def check_inputs(self, split: Split) -> None:
        if self.format == "auto":
            self.format = self.detect_format(split)
        require_columns(split, {"prompt": self.data["prompt"]})
        for index, value in enumerate(column_values(split.dataset, self.data["prompt"])):
            self.prompt_messages(value, split, index)

    def _split_transcripts(self, split: Split) -> None:
        """HH-RLHF as published (Anthropic/hh-rlhf) has no prompt column: chosen and rejected are whole
        transcripts, and the prompt is their shared start up to the last ``\n\nAssistant:`` in it (pairs
        whose transcripts differ before their last assistant turn are then left out:
        :meth:`_skip_early_divergence`)."""
        require_columns(split, {"chosen": self.data["chosen"], "rejected": self.data["rejected"]})
        columns = {self.data["prompt"]: [], self.data["chosen"]: [], self.data["rejected"]: []}
        marker = "\n\nAssistant:"
        rows = split.dataset
        for index, (chosen, rejected) in enumerate(
            zip(rows[self.data["chosen"]], rows[self.data["rejected"]], strict=True)
        ):
            for key, value in (("chosen", chosen), ("rejected", rejected)):
                if not isinstance(value, str):
                    self.reply_text(value, split, index, key)  # names the row and column
            end = shared_start(chosen, rejected).rfind(marker) + len(marker)
            if end < len(marker):
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: there is no prompt column "
                    f"'{self.data['prompt']}' (data.prompt), and columns '{self.data['chosen']}' and "
                    f"'{self.data['rejected']}' share no '\\n\\nAssistant:' turn to take it from; "
                    f"add the column"
                )
            columns[self.data["prompt"]].append(chosen[:end])
            columns[self.data["chosen"]].append(chosen[end:])
            columns[self.data["rejected"]].append(rejected[end:])
        from datasets import Dataset

        split.dataset = Dataset.from_dict(columns)

    def _skip_early_divergence(self, split: Split) -> None:
        """Leave out (and count) hh pairs whose transcripts differ before their last assistant turn.

        Their shared start ends at an earlier ``\\n\\nAssistant:``, so each reply holds the rest of its own
        dialogue, later Human turns included, and would train as one assistant message: DPO would push up
        the human's words in the chosen branch and down in the rejected one. Nor is the label a preference
        between the two earlier replies: it was given between two last replies that follow different
        dialogues, so cutting both at the first differing reply would train on a comparison nobody made.
        TRL keeps such pairs (its HH preparation script takes the rest as one assistant message;
        ``trl.extract_prompt`` takes it as a multi-message completion, all of it scored); neither is a sound
        DPO pair, so llmkit skips them, says so when the data is checked, and `llmkit validate` counts them.
        """
        chosen, rejected = self.data["chosen"], self.data["rejected"]
        rows = split.dataset
        diverged = [
            any(isinstance(reply, str) and HH_TURN.search(reply) for reply in pair)
            for pair in zip(rows[chosen], rows[rejected], strict=True)
        ]
        if not any(diverged):
            return
        if all(diverged):
            raise LlmkitError(
                f"{split.origin}: every pair's transcripts differ before their last assistant turn (the "
                f"'{chosen}' and '{rejected}' replies hold later '\\n\\nHuman:' turns), so no pair compares "
                f"two replies to the same dialogue; give pairs that differ in the last reply only"
            )
        first = split.where(diverged.index(True))
        self.diverged_early[split.role] = self.diverged_early.get(split.role, 0) + diverged.count(True)
        split.keep_rows(index for index, early in enumerate(diverged) if not early)
        log(
            f"{split.origin}: skipped {diverged.count(True)} of {len(diverged)} pair(s) that differ before "
            f"their last assistant turn (a reply would hold later turns), the first at {first}"
        )

    def data_summary(self, splits: dict[str, Split]) -> list[str]:
        """How many hh pairs were left out for differing before their last assistant turn (if any)."""
        if not self.diverged_early:
            return []
        counts = ", ".join(f"{count} in {role}" for role, count in self.diverged_early.items())
        total = sum(self.diverged_early.values())
        return [
            f"{total} pair(s) differ before their last assistant turn: skipped ({counts}); their replies "
            f"would hold later turns"
        ]

    def _skip_bad_turns(self, split: Split) -> None:
        """``data.skip_bad_turns``: leave out hh rows whose turns do not alternate (HH-RLHF has a few)."""
        good = []
        for value in column_values(split.dataset, self.data["prompt"]):
            try:
                self.prompt_messages(value)
                good.append(True)
            except LlmkitError:
                good.append(False)
        if all(good):
            return
        first = split.where(good.index(False))
        split.keep_rows(index for index, keep in enumerate(good) if keep)
        log(
            f"{split.origin}: skipped {good.count(False)} row(s) whose hh turns do not alternate "
            f"(data.skip_bad_turns=true), the first at {first}"
        )

    def _check_identical(self, split: Split) -> None:
        """Equal replies teach nothing (and a zero margin): an error, or left out with the option."""
        rows = split.dataset
        same = [
            self.reply_text(c, split, i, "chosen") == self.reply_text(r, split, i, "rejected")
            for i, (c, r) in enumerate(
                zip(rows[self.data["chosen"]], rows[self.data["rejected"]], strict=True)
            )
        ]
        if not any(same):
            return
        first = split.where(same.index(True))
        if not self.data["skip_identical_pairs"]:
            raise LlmkitError(
                f"{split.origin} {first}: columns '{self.data['chosen']}' and '{self.data['rejected']}' "
                f"hold the same reply, so there is no preference to learn; fix the row, or set "
                f"data.skip_identical_pairs=true to leave such pairs out"
            )
        if all(same):
            raise LlmkitError(
                f"{split.origin}: every pair has identical replies, so there is nothing to learn"
            )
        split.keep_rows(index for index, equal in enumerate(same) if not equal)
        log(
            f"{split.origin}: skipped {same.count(True)} pair(s) with identical replies "
            f"(data.skip_identical_pairs=true), the first at {first}"
        )

    def prompt_messages(self, value: Any, split: Split | None = None, index: int = 0) -> list[dict[str, str]]:
        """A row's prompt as chat messages ending with the user's turn; errors name the row and column."""
        column = self.data["prompt"]
        where = f"{split.origin} {split.where(index)}: column '{column}' (data.prompt)" if split else "prompt"
        shape = self.format if self.format != "auto" else "chat" if isinstance(value, list) else "text"
        if shape == "hh":
            if not isinstance(value, str) or not value.strip():
                shown = "empty" if value is None or isinstance(value, str) else f"not text ({value!r})"
                raise LlmkitError(f"{where} is {shown}; fill in or remove that row")
            return hh_messages(value, where)
        return chat_prompt_messages(value, shape, where)

    def reply_text(self, value: Any, split: Split | None, index: int, key: str) -> str:
        """A chosen/rejected reply as text (a one-message assistant list gives its content)."""
        column = self.data[key]
        where = f"{split.origin} {split.where(index)}: column '{column}' (data.{key})" if split else key
        if isinstance(value, list):
            if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
                raise LlmkitError(f"{where} is a list but not one {{role: assistant, content}} message")
            value = value[0].get("content")
        if not isinstance(value, str):
            raise LlmkitError(
                f"{where} is {'empty' if value is None else f'not text ({value!r})'}; fill it in"
            )
        if not value.strip():
            raise LlmkitError(f"{where} is an empty reply; fill it in or remove that row")
        return self.trained_reply(value)

    def trained_reply(self, text: str) -> str:
        """A reply as the model reads it: HH's replies start with the space after ``Assistant:``, dropped."""
        return text.strip() if self.format == "hh" else text

    def reply_columns(self, columns: list[str]) -> tuple[str, ...]:
        """The reply keys a split's rows hold: a pair, a single completion (KTO's rows, a reply to score),
        or none (prompts only)."""
        if self.data["chosen"] in columns:
            return ("chosen", "rejected")
        return ("completion",) if self.data["completion"] in columns else ()

    # -- encoding ---------------------------------------------------------------------------------
    def chat_template(self, tokenizer: PreTrainedTokenizerBase) -> str:
        """The model's template, or llmkit's when asked for; a model without one is an error, not a guess."""
        return required_chat_template(tokenizer, self.data["use_chat_template"], "preference pairs")

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        carry_chat_template(tokenizer, self.chat_template(tokenizer))

    def encoding_state(self) -> dict[str, Any]:
        return {"format": self.format}

    def encoding_metrics(self, role: str, dataset: Dataset) -> dict[str, int]:
        states, prefix = dataset["truncation"], "eval" if role == "validation" else role
        return {
            f"{prefix}_truncated_pairs": states.count(TRUNCATED),
            f"{prefix}_dropped_pairs": states.count(DROPPED),
        }

    def prepare_evaluation(self, role: str, split: Split, encoded: Dataset) -> Dataset:
        """Drop the pairs that did not fit (counted by encoding_metrics) and the bookkeeping column."""
        states = encoded["truncation"]
        if DROPPED in states:
            log(
                f"{split.origin}: {states.count(DROPPED)} of {len(states)} pairs dropped: the last user turn "
                f"alone is longer than data.max_prompt_length={self.data['max_prompt_length']}"
            )
            if states.count(DROPPED) == len(states):
                raise LlmkitError(
                    f"{split.origin}: every pair's prompt is longer than data.max_prompt_length="
                    f"{self.data['max_prompt_length']}; raise it (and data.max_length)"
                )
            encoded = encoded.select([index for index, state in enumerate(states) if state != DROPPED])
        return encoded.remove_columns("truncation")


class PreferenceTask(PairedRowsTask):
    name = "preference"
    default_model = "smollm2-135m"
    pipeline_task = "text-generation"
    prediction_keys = ("generated",)
    headline_metric = "reward_accuracy"
    #: KTO scores unpaired rows: there are no pairs to count as right, the margin is its headline.
    other_headline_metrics = ("reward_margin",)
    data_defaults: ClassVar[dict[str, Any]] = {
        **PairedRowsTask.data_defaults,
        "label": "label",  # KTO's unpaired rows: true for a desirable completion, false for an undesirable
        "max_new_tokens": 128,
        # > 1: the replies predict and evaluate generate penalise tokens already in the text (1.2 is common)
        "repetition_penalty": 1.0,
    }
    options_section = "preference"
    #: Each method's settings live in its own sub-section, so `preference.method=simpo` on a DPO recipe
    #: switches every setting at once (a DPO beta of 0.1 is no SimPO beta) and the other section rests.
    options_defaults: ClassVar[dict[str, Any]] = {
        "method": "dpo",  # dpo | simpo, orpo (reference-free) | kto (unpaired rows): which section applies
        "dpo": {
            "loss_type": "sigmoid",  # one of TRL's DPO losses
            "beta": 0.1,
            "precompute_reference": False,  # reference log-probs once before training (a forward less/step)
            # weight of the chosen replies' NLL beside the DPO loss (TRL's "sft" loss, as RPO adds it): the
            # policy also learns the chosen replies themselves -- their length, where they end their turn
            "sft_weight": 0.0,
        },
        "simpo": {
            "beta": 2.0,
            "gamma": 0.5,  # the target reward margin
        },
        "orpo": {
            "beta": 0.1,  # lambda: the odds-ratio term's weight beside the chosen reply's NLL
        },
        "kto": {
            "beta": 0.1,
            "desirable_weight": 1.0,  # the weight of desirable rows' losses
            "undesirable_weight": 1.0,  # the weight of undesirable rows' losses
        },
    }
    training_defaults: ClassVar[dict[str, Any]] = {
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "learning_rate": 5e-6,
        "gradient_checkpointing": False,  # TRL's configs default it on; llmkit leaves it to the recipe
        "eval_on_start": True,  # reward accuracy before training too (eval_before_*)
    }

    def __init__(self, data: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        super().__init__(data, options)
        #: Encoded validation/test pairs (prepare_evaluation): their reference log-probs, when precomputed,
        #: come from the model before training, even for a full fine-tune whose reference is then gone.
        self.evaluation_splits: dict[str, Any] = {}
        check_options(self.options)
        check_repetition_penalty(data["repetition_penalty"], "data.repetition_penalty")
        if self.unpaired:
            self.target_columns = ("completion_ids", "label")

    @property
    def unpaired(self) -> bool:
        """The method learns from unpaired rows (KTO): a pair becomes a desirable and an undesirable row."""
        return self.options["method"] in UNPAIRED_METHODS

    # -- data -------------------------------------------------------------------------------------
    def check_data(self, splits: dict[str, Split]) -> None:
        """Pairs, checked as the preference tasks check them; or KTO's unpaired rows ``{prompt, completion,
        label}``, whose labels must be true or false."""
        train = splits["train"]
        columns = train.dataset.column_names
        if self.data["chosen"] in columns or self.data["completion"] not in columns:
            super().check_data(splits)
            return
        if not self.unpaired:
            raise LlmkitError(
                f"{train.origin}: rows of column '{self.data['completion']}' (data.completion) without "
                f"'{self.data['chosen']}' / '{self.data['rejected']}' pairs are unpaired; train them with "
                f"preference.method=kto, or give pairs"
            )
        for split in splits.values():
            self.check_inputs(split)
            if split.role == "test" and self.data["completion"] not in split.dataset.column_names:
                continue  # prompts only: predicted
            require_columns(split, {"completion": self.data["completion"], "label": self.data["label"]})
            for index, value in enumerate(column_values(split.dataset, self.data["completion"])):
                self.reply_text(value, split, index, "completion")
            self._check_labels(split)

    def _check_labels(self, split: Split) -> None:
        """A KTO label says whether the completion is desirable: true or false, both present in training."""
        labels = column_values(split.dataset, self.data["label"])
        for index, value in enumerate(labels):
            if not isinstance(value, bool):
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: column '{self.data['label']}' (data.label) is "
                    f"{value!r}; a KTO label is true (a desirable completion) or false (an undesirable one)"
                )
        if split.role == "train" and len(set(labels)) == 1:
            raise LlmkitError(
                f"{split.origin}: every row's '{self.data['label']}' (data.label) is {labels[0]}; KTO learns "
                f"from desirable and undesirable completions, give both"
            )

    def encoding_state(self) -> dict[str, Any]:
        return {**super().encoding_state(), **({"unpaired": True} if self.unpaired else {})}

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        from datasets import Dataset

        template = self.chat_template(tokenizer)
        if self.unpaired and self.reply_columns(dataset.column_names):
            return self.encode_unpaired(dataset, tokenizer, template)
        columns: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "truncation": []}
        has_replies = self.data["chosen"] in dataset.column_names
        for row in dataset:
            messages = self.prompt_messages(row[self.data["prompt"]])
            keys = ("chosen", "rejected") if has_replies else ()
            replies = [self.reply_text(row[self.data[k]], None, 0, k) for k in keys]
            pair = encode_pair(tokenizer, template, messages, replies, self.data)
            if (
                has_replies
                and pair["truncation"] != DROPPED
                and not (pair["chosen_ids"] and pair["rejected_ids"])
            ):
                raise LlmkitError(
                    "the chat template renders an assistant reply as no text, so no token would carry loss; "
                    "`llmkit validate` shows how rows render; set data.use_chat_template=false for llmkit's"
                )
            for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
                columns[key].append(pair.get(key, []))
            columns["truncation"].append(pair["truncation"])
        if not has_replies:
            del columns["chosen_ids"], columns["rejected_ids"]
        return Dataset.from_dict(columns)

    def unpaired_rows(self, dataset: Dataset) -> list[tuple[Any, str, bool]]:
        """``(prompt, completion, desirable)`` rows: as given, or each pair's chosen (true) and rejected
        (false) reply, shuffled once (seeded): KTO trains in a fixed order, and a batch should mix both."""
        if self.reply_columns(dataset.column_names) == ("completion",):
            prompt, completion, label = (self.data[key] for key in ("prompt", "completion", "label"))
            return [
                (row[prompt], self.reply_text(row[completion], None, 0, "completion"), row[label])
                for row in dataset
            ]
        rows = []
        for row in dataset:
            for key, desirable in (("chosen", True), ("rejected", False)):
                rows.append(
                    (row[self.data["prompt"]], self.reply_text(row[self.data[key]], None, 0, key), desirable)
                )
        random.Random(UNPAIR_SEED).shuffle(rows)
        return rows

    def encode_unpaired(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase, template: str) -> Dataset:
        """KTO's tokenized format: ``prompt_ids``, ``completion_ids``, ``label`` (cut as pairs are)."""
        from datasets import Dataset

        columns: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "label": [], "truncation": []}
        for prompt, completion, desirable in self.unpaired_rows(dataset):
            row = encode_pair(tokenizer, template, self.prompt_messages(prompt), [completion], self.data)
            if row["truncation"] != DROPPED and not row["chosen_ids"]:
                raise LlmkitError(
                    "the chat template renders an assistant reply as no text, so no token would carry loss; "
                    "`llmkit validate` shows how rows render; set data.use_chat_template=false for llmkit's"
                )
            columns["prompt_ids"].append(row.get("prompt_ids", []))
            columns["completion_ids"].append(row.get("chosen_ids", []))
            columns["label"].append(desirable)
            columns["truncation"].append(row["truncation"])
        return Dataset.from_dict(columns)

    def prepare_evaluation(self, role: str, split: Split, encoded: Dataset) -> Dataset:
        encoded = super().prepare_evaluation(role, split, encoded)
        if role != "train" and "chosen_ids" in encoded.column_names:
            self.evaluation_splits[role] = encoded  # precompute_reference scores them before training
        return encoded

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        from trl.trainer.dpo_trainer import DataCollatorForPreference
        from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.unpaired:
            return DataCollatorForUnpairedPreference(pad_token_id=pad)
        return DataCollatorForPreference(pad_token_id=pad)

    def example_lengths(self, encoded: Dataset) -> list[int]:
        """Tokens of the longer sequence (prompt + reply) of each pair, for `llmkit validate`."""
        if "completion_ids" in encoded.column_names:  # KTO's unpaired rows
            return [
                len(p) + len(c) for p, c in zip(encoded["prompt_ids"], encoded["completion_ids"], strict=True)
            ]
        return [
            len(p) + max(len(c), len(r))
            for p, c, r in zip(
                encoded["prompt_ids"], encoded["chosen_ids"], encoded["rejected_ids"], strict=True
            )
        ]

    def describe_example(self, batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        lines = []
        if "label" in batch:  # KTO: one unpaired row
            ids = batch["input_ids"][0][batch["attention_mask"][0].bool()]
            loss = batch["completion_mask"][0][: len(ids)].bool()
            kind = "desirable" if bool(batch["label"][0]) else "undesirable"
            return [f"{kind} ({len(ids)} tokens, loss on {int(loss.sum())}): {tokenizer.decode(ids)!r}"]
        for name, row in (("chosen", 0), ("rejected", 1)):
            ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
            loss = batch["completion_mask"][row][: len(ids)].bool()
            lines.append(f"{name} ({len(ids)} tokens, loss on {int(loss.sum())}): {tokenizer.decode(ids)!r}")
        return lines

    def chat_examples(self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> list[Any]:
        """Both sequences of each pair (KTO's rows: the one) as trained, with the prompt inference would
        render (chat checks)."""
        from llmkit.tasks.chat_checks import ChatExample

        template = self.chat_template(tokenizer)
        examples = []
        for row in rows:
            messages = self.prompt_messages(row[self.data["prompt"]])
            keys = self.reply_columns(list(row))
            replies = [self.reply_text(row[self.data[k]], None, 0, k) for k in keys]
            pair = encode_pair(tokenizer, template, messages, replies, self.data)
            if pair["truncation"] == DROPPED:
                examples.append(ChatExample(pair["messages"], [], [], dropped=True))
                continue
            for key in ("chosen_ids", "rejected_ids")[: len(replies)]:
                ids = pair["prompt_ids"] + pair[key]
                mask = [False] * len(pair["prompt_ids"]) + [True] * len(pair[key])
                examples.append(
                    ChatExample(pair["messages"], ids, mask, truncated=pair["truncation"] == TRUNCATED)
                )
        return examples

    # -- model ------------------------------------------------------------------------------------
    def check_model(self, model_path: Path) -> None:
        check_causal_lm_length(model_path, self.data["max_length"])

    def load_model(self, path: Path, **load_options: Any) -> PreTrainedModel:
        self.check_model(path)
        return load_causal_lm(path, **load_options)

    def peft_task_type(self) -> str | None:
        return "CAUSAL_LM"

    def loss_targets(self) -> tuple[str, ...]:
        return ()  # TRL's losses are means over pairs, divided by the accumulation by TRL's trainers

    def trainer_class(self) -> type:
        if self.options["method"] in ("simpo", "orpo"):
            return reference_free_trainer_class(self)
        if self.options["method"] == "kto":
            return kto_trainer_class(self)
        return dpo_trainer_class(self)

    def arguments_class(self) -> type:
        if self.options["method"] == "simpo":
            from trl.experimental.cpo import CPOConfig

            return CPOConfig
        if self.options["method"] == "orpo":
            from trl.experimental.orpo import ORPOConfig

            return ORPOConfig
        if self.options["method"] == "kto":
            from trl import KTOConfig

            return KTOConfig
        from trl import DPOConfig

        return DPOConfig

    # -- inference ----------------------------------------------------------------------------------
    def prompt_text(self, tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> str:
        messages = self.prompt_messages(row[self.data["prompt"]])
        return render_chat(tokenizer, messages, tokenizer.chat_template, add_generation_prompt=True)

    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        from llmkit.tasks.decoding import generate_from_prompt, greedy

        return [
            {
                "generated": generate_from_prompt(
                    model,
                    tokenizer,
                    self.prompt_text(tokenizer, row),
                    sampling=greedy(self.data["max_new_tokens"], self.data["repetition_penalty"]),
                    templated=True,
                ).text
            }
            for row in rows
        ]

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        """The model answers each prompt's last user turn; the reference is the chosen reply."""
        from llmkit.tasks.decoding import generate_from_prompt, greedy

        samples = []
        for row in rows:
            messages = self.prompt_messages(row[self.data["prompt"]])
            generated = generate_from_prompt(
                model,
                tokenizer,
                self.prompt_text(tokenizer, row),
                sampling=greedy(
                    min(self.data["max_new_tokens"], REPORT_NEW_TOKENS), self.data["repetition_penalty"]
                ),
                templated=True,
            )
            chosen = row.get(self.data["chosen"])
            reference = self.reply_text(chosen, None, 0, "chosen") if chosen is not None else ""
            samples.append(
                {
                    "input": messages[-1]["content"],
                    "prediction": generated.text.strip(),
                    "reference": reference,
                }
            )
        return samples


# -- options ------------------------------------------------------------------------------------------
def check_options(options: dict[str, Any]) -> None:
    """The ``preference:`` section: a known method, and valid values in that method's sub-section."""
    method = options["method"]
    if method not in METHODS:
        raise LlmkitError(
            f"preference.method must be one of {', '.join(METHODS)}, got {method!r}"
            f"{did_you_mean(str(method), METHODS)}"
        )
    dpo = options["dpo"]
    if dpo["loss_type"] not in DPO_LOSS_TYPES:
        raise LlmkitError(
            f"preference.dpo.loss_type must be one of {', '.join(DPO_LOSS_TYPES)}, got {dpo['loss_type']!r}"
            f"{did_you_mean(str(dpo['loss_type']), DPO_LOSS_TYPES)}"
        )
    positive = [(f"{name}.beta", options[name]["beta"]) for name in ("dpo", "simpo", "orpo", "kto")]
    positive += [(f"kto.{key}", options["kto"][key]) for key in ("desirable_weight", "undesirable_weight")]
    for key, value in positive:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise LlmkitError(f"preference.{key} must be a positive number, got {value!r}")
    sft_weight = dpo["sft_weight"]
    if isinstance(sft_weight, bool) or not isinstance(sft_weight, (int, float)) or sft_weight < 0:
        raise LlmkitError(
            f"preference.dpo.sft_weight must be 0 (off) or a positive number, got {sft_weight!r}"
        )
    if not isinstance(dpo["precompute_reference"], bool):
        raise LlmkitError(
            f"preference.dpo.precompute_reference must be true or false, got {dpo['precompute_reference']!r}"
        )


def method_settings(options: dict[str, Any], max_length: int) -> dict[str, Any]:
    """The TRL config fields the ``preference:`` section sets (llmkit tokenizes and truncates the pairs)."""
    if options["method"] == "simpo":
        simpo = options["simpo"]
        return {
            "loss_type": "simpo",
            "cpo_alpha": 0.0,
            "beta": float(simpo["beta"]),
            "simpo_gamma": float(simpo["gamma"]),
            "max_length": max_length,
            "remove_unused_columns": False,
        }
    if options["method"] == "orpo":
        return {
            "beta": float(options["orpo"]["beta"]),
            "max_length": max_length,
            "remove_unused_columns": False,
        }
    if options["method"] == "kto":
        kto = options["kto"]
        return {
            "loss_type": "kto",
            "beta": float(kto["beta"]),
            "desirable_weight": float(kto["desirable_weight"]),
            "undesirable_weight": float(kto["undesirable_weight"]),
            "max_length": None,
            # the KL term pairs each completion with the previous row's prompt in its batch (precomputed)
            "train_sampling_strategy": "sequential",
        }
    dpo = options["dpo"]
    losses = {"loss_type": [dpo["loss_type"]], "loss_weights": None}
    if dpo["sft_weight"]:
        losses = {"loss_type": [dpo["loss_type"], "sft"], "loss_weights": [1.0, float(dpo["sft_weight"])]}
    return {
        **losses,
        "beta": float(dpo["beta"]),
        "precompute_ref_log_probs": dpo["precompute_reference"],
        "max_length": None,
    }


# -- data shapes ------------------------------------------------------------------------------------
def hh_messages(text: str, where: str) -> list[dict[str, str]]:
    """``\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nAssistant:`` -> alternating user/assistant messages."""
    parts = HH_TURN.split(text)
    speakers, contents = parts[1::2], parts[2::2]
    if not speakers:
        raise LlmkitError(f"{where}: no '\\n\\nHuman:' / '\\n\\nAssistant:' turns (data.format=hh)")
    if parts[0].strip():
        raise LlmkitError(
            f"{where}: text before the first '\\n\\nHuman:' turn; an hh prompt starts with a turn"
        )
    for number, (speaker, previous) in enumerate(
        zip(speakers, ["Assistant", *speakers[:-1]], strict=True), 1
    ):
        if speaker == previous:
            raise LlmkitError(
                f"{where}: hh turns do not alternate: turn {number} is {speaker} after {previous}"
                f"{' (the dialogue must start with Human)' if number == 1 else ''}; fix the row, or set "
                f"data.skip_bad_turns=true to leave such rows out"
            )
    if speakers[-1] != "Assistant" or contents[-1].strip():
        raise LlmkitError(f"{where}: an hh prompt ends with an empty '\\n\\nAssistant:' turn for the reply")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [
        {"role": roles[speaker], "content": content.strip()}
        for speaker, content in zip(speakers[:-1], contents[:-1], strict=True)
    ]


def encode_pair(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    messages: list[dict[str, str]],
    replies: list[str],
    data: dict[str, Any],
) -> dict[str, Any]:
    """One pair in TRL's pre-tokenized format, with how it was cut (``truncation``) and the kept ``messages``.

    The prompt keeps its last turns within ``max_prompt_length`` (a leading system message stays); each reply
    (the template's end of turn included) is cut to fit ``max_length``.
    """
    kept = messages
    while True:
        prompt_text = render_chat(tokenizer, kept, template, add_generation_prompt=True)
        prompt = tokenize_segments(tokenizer, [(prompt_text, False)], 10**9).input_ids
        if len(prompt) <= data["max_prompt_length"]:
            break
        shorter = drop_first_turn(kept)
        if shorter is None:
            return {"truncation": DROPPED, "messages": kept}
        kept = shorter
    truncated = kept is not messages
    pair: dict[str, Any] = {"prompt_ids": prompt, "messages": kept}
    room = data["max_length"] - len(prompt)
    for key, reply in zip(("chosen_ids", "rejected_ids"), replies, strict=False):
        # as conversation_segments splits the last turn (earlier replies stay in the prompt, untrained)
        full = render_chat(tokenizer, [*kept, {"role": "assistant", "content": reply}], template)
        if not full.startswith(prompt_text):
            raise LlmkitError(
                "the chat template renders the prompt differently when a reply follows it, so the prompt "
                "trained on would not be the one generation sees; set data.use_chat_template=false to use "
                "llmkit's template"
            )
        segments = [(prompt_text, False), (full[len(prompt_text) :], True)]
        example = tokenize_segments(tokenizer, segments, 10**9)  # the reply tokenized as continuing text
        start = len(prompt)
        reply_ids = example.input_ids[start:]
        truncated = truncated or len(reply_ids) > room
        pair[key] = reply_ids[:room]
    pair["truncation"] = TRUNCATED if truncated else WHOLE
    return pair


def shared_start(first: str, second: str) -> str:
    """The longest common start of two texts."""
    length = next((i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), None)
    return first[: min(len(first), len(second)) if length is None else length]


def drop_first_turn(messages: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """The conversation without its oldest user turn (and the reply to it); None when only one is left."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system) :]
    users = [index for index, message in enumerate(turns) if message["role"] == "user"]
    if len(users) < 2:
        return None
    return system + turns[users[1] :]


# -- trainers -----------------------------------------------------------------------------------------
def llmkit_metric_name(key: str) -> str:
    """TRL's ``rewards/accuracies`` -> ``reward_accuracy``; the eval_ prefix is left to the caller."""
    return METRIC_NAMES.get(key, key.replace("/", "_"))


@dataclass
class EvaluatedBatches:
    """An evaluation pass's per-batch metric means (llmkit's names) and each batch's number of pairs (of
    rows, for KTO: ``unit`` names what a batch holds)."""

    means: dict[str, list[float]]
    pairs: list[int]
    unit: str = "pairs"


def weighted_means(values: dict[str, list[float]], pairs: list[int]) -> dict[str, float]:
    """Per-batch means averaged with each batch's number of pairs (a short last batch counts less)."""
    means = {}
    for key, batch_means in values.items():
        if len(batch_means) == len(pairs) and sum(pairs):
            means[key] = sum(m * n for m, n in zip(batch_means, pairs, strict=True)) / sum(pairs)
        elif batch_means:
            means[key] = sum(batch_means) / len(batch_means)
    return means


def trainer_mixin() -> type:
    """What both TRL trainers need under llmkit's spine: llmkit's metric names, evaluation metrics in
    ``evaluate``'s result, no telemetry and no TRL model card (llmkit writes its own)."""

    class PreferenceTrainerMixin:
        batch_unit = "pairs"  # what an evaluation batch holds, as `llmkit evaluate` names it

        def _stored(self, mode: str) -> dict[str, list[float]]:
            raise NotImplementedError

        def _pairs_in(self, inputs: dict[str, Any]) -> int:
            raise NotImplementedError

        def _send_telemetry(self) -> None:
            return

        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            return

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            self._eval_pairs.append(self._pairs_in(inputs))
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

        def evaluation_loop(
            self,
            dataloader,
            description,
            prediction_loss_only=None,
            ignore_keys=None,
            metric_key_prefix="eval",
        ):
            self._eval_pairs = []
            self._stored("eval").clear()
            self._prepare_policy_as_training_does()
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            measured = {key.removeprefix("eval_"): value for key, value in self._stored("eval").items()}
            measured.pop("num_tokens", None)
            for key, value in weighted_means(measured, self._eval_pairs).items():
                output.metrics[f"{metric_key_prefix}_{llmkit_metric_name(key)}"] = value
            # TRL keeps each batch's mean, not each pair's: `llmkit evaluate` resamples these batches
            self.evaluated_batches = EvaluatedBatches(
                {llmkit_metric_name(key): list(values) for key, values in measured.items()},
                list(self._eval_pairs),
                self.batch_unit,
            )
            self._stored("eval").clear()
            return output

        def _prepare_policy_as_training_does(self) -> None:
            """Mixed precision is accelerate's autocast around a prepared model's forward. The Trainer
            prepares the model for an evaluation only while the accelerator holds no model, and TRL's prepared
            reference (DPO's or KTO's frozen copy) is one: an evaluation before any training (``llmkit
            evaluate``) scored the policy in fp32 against a bf16 reference, ~1e-4 off the run's own scores.
            Prepared here, it computes as in training."""
            reference = getattr(self, "ref_model", None)
            if reference is None:
                return
            models = self.accelerator._models
            policy_prepared = any(m is self.model for m in models)
            reference_prepared = any(m is reference for m in models)
            sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled  # prepared otherwise by the Trainer
            if reference_prepared and not policy_prepared and not sharded:
                self.model = self.accelerator.prepare_model(self.model, evaluation_mode=True)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            store = self._stored("train")
            renamed = {llmkit_metric_name(key): value for key, value in store.items()}
            store.clear()
            store.update(renamed)
            super().log(logs, start_time)

    return PreferenceTrainerMixin


def dpo_trainer_class(task: PreferenceTask) -> type:
    """TRL's DPOTrainer on llmkit's pre-tokenized pairs; the reference is the adapter switched off (LoRA),
    a frozen copy of the model (full fine-tuning), or log-probs computed once (``precompute_reference``)."""
    import torch
    from transformers import Trainer
    from trl import DPOTrainer

    class PreferenceDPOTrainer(trainer_mixin(), DPOTrainer):
        def __init__(self, model, args, train_dataset, eval_dataset=None, **kwargs: Any) -> None:
            for key, value in method_settings(task.options, task.data["max_length"]).items():
                setattr(args, key, value)
            kwargs.pop("preprocess_logits_for_metrics", None)
            kwargs.pop("compute_metrics", None)  # the metrics come from the loss (rewards, margins)
            precompute = args.precompute_ref_log_probs
            ref_model = None if precompute else frozen_reference(model)
            self._eval_pairs: list[int] = []
            super().__init__(
                model=model,
                ref_model=ref_model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                **kwargs,
            )
            drop_reference_adapter(self.model)
            self._with_reference: dict[int, Any] = {}
            if precompute and eval_dataset is not None:
                self._with_reference[id(eval_dataset)] = self.eval_dataset
            if precompute:  # a test split too, while the model is still the reference
                for role, split in task.evaluation_splits.items():
                    self.precompute_reference(split, role)

        def _stored(self, mode: str) -> dict[str, list[float]]:
            return self._metrics[mode]

        def _pairs_in(self, inputs: dict[str, Any]) -> int:
            return int(inputs["input_ids"].shape[0]) // 2

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:  # llmkit's encoding: TRL's format already
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def precompute_reference(self, dataset, name: str) -> Any:
            """A split with its reference log-probs, computed once (before training for a full model)."""
            if id(dataset) not in self._with_reference:
                size = self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size
                self._with_reference[id(dataset)] = self._precompute_ref_logps(dataset, name, size)
            return self._with_reference[id(dataset)]

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            if self.precompute_ref_logps and eval_dataset is not None:
                with torch.no_grad():
                    prepared = self.precompute_reference(eval_dataset, metric_key_prefix)
                return Trainer.evaluate(self, prepared, ignore_keys, metric_key_prefix)
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    return PreferenceDPOTrainer


def reference_free_trainer_class(task: PreferenceTask) -> type:
    """TRL's CPOTrainer with the SimPO loss (cpo_alpha 0: no NLL term) or its ORPOTrainer (the chosen reply's
    NLL plus the odds-ratio term), fed llmkit's pre-tokenized pairs: both score a pair by the policy alone."""
    if task.options["method"] == "orpo":
        from trl.experimental.orpo import ORPOTrainer as base
    else:
        from trl.experimental.cpo import CPOTrainer as base

    class PreferenceReferenceFreeTrainer(trainer_mixin(), base):
        def __init__(self, model, args, train_dataset, eval_dataset=None, **kwargs: Any) -> None:
            for key, value in method_settings(task.options, task.data["max_length"]).items():
                setattr(args, key, value)
            kwargs.pop("data_collator", None)  # CPO and ORPO pad their own columns
            self._eval_pairs: list[int] = []
            super().__init__(
                model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs
            )

        def _stored(self, mode: str) -> dict[str, list[float]]:
            return self._stored_metrics[mode]

        def _pairs_in(self, inputs: dict[str, Any]) -> int:
            return len(inputs["prompt_input_ids"])

        def tokenize_row(self, feature, model=None) -> dict:
            """llmkit's ids -> CPO's and ORPO's columns (prompt + reply sequences, labels on the reply)."""
            prompt = list(feature["prompt_ids"])
            row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
            for key in ("chosen", "rejected"):
                reply = list(feature[f"{key}_ids"])
                row[f"{key}_input_ids"] = prompt + reply
                row[f"{key}_attention_mask"] = [1] * (len(prompt) + len(reply))
                row[f"{key}_labels"] = [IGNORE_INDEX] * len(prompt) + reply
            return row

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            if eval_dataset is not None and "chosen_labels" not in eval_dataset.column_names:
                eval_dataset = eval_dataset.map(self.tokenize_row)
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    return PreferenceReferenceFreeTrainer


def kto_trainer_class(task: PreferenceTask) -> type:
    """TRL's KTOTrainer on llmkit's pre-tokenized unpaired rows; the reference is, as for DPO, the adapter
    switched off (LoRA) or a frozen copy of the model."""
    from trl import KTOTrainer

    class PreferenceKTOTrainer(trainer_mixin(), KTOTrainer):
        def __init__(self, model, args, train_dataset, eval_dataset=None, **kwargs: Any) -> None:
            for key, value in method_settings(task.options, task.data["max_length"]).items():
                setattr(args, key, value)
            kwargs.pop("preprocess_logits_for_metrics", None)
            kwargs.pop("compute_metrics", None)  # the metrics come from the loss (rewards, KL)
            ref_model = frozen_reference(model)
            self._eval_pairs: list[int] = []
            super().__init__(
                model=model,
                ref_model=ref_model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                **kwargs,
            )
            drop_reference_adapter(self.model)

        def _stored(self, mode: str) -> dict[str, list[float]]:
            return self._metrics[mode]

        batch_unit = "rows (desirable or undesirable)"

        def _pairs_in(self, inputs: dict[str, Any]) -> int:
            return len(inputs["label"])

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            """llmkit's encoding is TRL's tokenized format already; the KL term's mismatched completions are
            added as TRL adds them: each row takes the previous row's completion within its batch."""
            if "prompt_ids" not in dataset.column_names:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if not self.calculate_KL or "KL_completion_ids" in dataset.column_names:
                return dataset

            def shifted(batch: dict[str, list]) -> dict[str, list]:
                batch["KL_completion_ids"] = [batch["completion_ids"][-1], *batch["completion_ids"][:-1]]
                return batch

            return dataset.map(shifted, batched=True, batch_size=args.per_device_train_batch_size)

    return PreferenceKTOTrainer
