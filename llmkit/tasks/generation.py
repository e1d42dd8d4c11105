"""Causal language modelling: continue plain text, or follow instructions / chat, with a decoder-only model.

Three data shapes, chosen by ``data.format`` (``auto`` looks at the training file's columns):

* ``text`` -- documents (a text column, or a .txt file split by ``data.txt_unit``) joined with EOS and cut
  into ``max_length`` blocks, or with ``data.packing`` packed so that no document attends to another;
* ``instruction`` -- ``instruction`` / optional ``input`` / ``output`` columns (Alpaca);
* ``chat`` -- a ``messages`` column of ``{role, content}`` lists (roles system, user, assistant).

Instruction and chat rows are rendered with the model's chat template (llmkit's documented default,
``llmkit.tasks.causal_lm.DEFAULT_CHAT_TEMPLATE``, when it has none) and only the assistant's tokens carry a
loss. Metrics: eval loss and perplexity.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.core.progress import log
from llmkit.data.files import TXT_UNITS, Split, column_values, require_columns, require_text, stream_texts
from llmkit.tasks.base import FAST_LOSS_COMPILE_REFUSAL, Task
from llmkit.tasks.causal_lm import (
    CHAT_ROLES,
    IGNORE_INDEX,
    CausalLMCollator,
    Example,
    causal_lm_trainer_class,
    chat_template_for,
    check_causal_lm_length,
    concatenated_block_chunks,
    concatenated_blocks,
    conversation_segments,
    document_examples,
    document_ids,
    instruction_messages,
    load_causal_lm,
    pack_examples,
    packed_documents_stay_apart,
    render_chat,
    segments_to_example,
    tokenize_segments,
)
from llmkit.tasks.decoding import check_repetition_penalty

if TYPE_CHECKING:
    from pathlib import Path

    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FORMATS = ("auto", "text", "instruction", "chat")
SKIP_HINT = ", or set data.skip_empty_outputs=true to leave such rows out"
#: Run-report samples: a plain text's opening words become the prompt; replies are cut at this many tokens.
REPORT_PROMPT_WORDS = 12
REPORT_NEW_TOKENS = 48


class GenerationTask(Task):
    name = "generation"
    default_model = "smollm2-135m"
    pipeline_task = "text-generation"
    prediction_keys = ("generated",)
    headline_metric = "perplexity"
    scratch_style = "decoder"
    streams = True
    data_defaults: ClassVar[dict[str, Any]] = {
        "format": "auto",
        "text": "text",
        "instruction": "instruction",
        "input": "input",
        "output": "output",
        "messages": "messages",
        "packing": False,
        "skip_empty_outputs": False,  # true: rows with an empty reply are left out (counted), not an error
        "txt_unit": "paragraph",
        "use_chat_template": True,
        "max_new_tokens": 128,
        # > 1: predictions and evaluation's generations penalise tokens already in the text (1.2 is common)
        "repetition_penalty": 1.0,
        "max_length": 256,
    }
    torch_compile_refusal = FAST_LOSS_COMPILE_REFUSAL
    distills = True
    training_defaults: ClassVar[dict[str, Any]] = {
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
    }

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        for key, allowed in (("format", FORMATS), ("txt_unit", TXT_UNITS)):
            if data[key] not in allowed:
                raise LlmkitError(
                    f"data.{key} must be one of {', '.join(allowed)}, got {data[key]!r}"
                    f"{did_you_mean(str(data[key]), allowed)}"
                )
        self.format: str = data["format"]
        check_repetition_penalty(data["repetition_penalty"], "data.repetition_penalty")

    # -- data -------------------------------------------------------------------------------------
    def detect_format(self, split: Split) -> str:
        """``auto``: a messages column means chat, an instruction column instruction data, else text."""
        if self.format != "auto":
            return self.format
        columns = split.dataset.column_names
        for shape in ("chat", "instruction", "text"):
            if self._shape_column(shape) in columns:
                return shape
        raise LlmkitError(
            f"{split.origin}: no column for any generation data shape (text '{self.data['text']}', "
            f"instruction '{self.data['instruction']}', messages '{self.data['messages']}'); columns are: "
            f"{', '.join(columns)}; set data.text, data.instruction or data.messages to one of them"
        )

    def _shape_column(self, shape: str) -> str:
        return self.data[{"chat": "messages", "instruction": "instruction", "text": "text"}[shape]]

    def check_inputs(self, split: Split) -> None:
        if self.format == "auto":
            self.format = self.detect_format(split)
        if self.format == "text":
            require_columns(split, {"text": self.data["text"]})
            require_text(split, self.data["text"], "text")
        elif self.format == "instruction":
            require_columns(split, {"instruction": self.data["instruction"]})
            require_text(split, self.data["instruction"], "instruction")
            self._check_optional_input(split)
        else:
            require_columns(split, {"messages": self.data["messages"]})
            self._check_messages(split, need_reply=False)

    def check_data(self, splits: dict[str, Split]) -> None:
        self.format = self.detect_format(splits["train"])
        for split in splits.values():
            self.check_inputs(split)
            if self.format == "instruction" and (
                split.role != "test" or self.data["output"] in split.dataset.column_names
            ):
                require_columns(split, {"output": self.data["output"]})
                if self.data["skip_empty_outputs"]:
                    self._skip_empty_outputs(split)
                require_text(split, self.data["output"], "output", also=SKIP_HINT)
            if self.format == "chat" and split.role != "test":
                if self.data["skip_empty_outputs"]:
                    self._skip_empty_outputs(split)
                self._check_messages(split, need_reply=True)

    def pretraining_texts(self, split: Split) -> list[str]:
        """A model pre-trained from scratch learns plain text; its tokenizer trains on the documents."""
        if self.format != "text":
            raise LlmkitError(
                f"{split.origin}: model.from_scratch pre-trains on plain text, and this is {self.format} "
                f"data; pre-train on text (data.format=text), then fine-tune that folder on instructions"
            )
        return stream_texts(split, self.data["text"])

    def _skip_empty_outputs(self, split: Split) -> None:
        """Leave out rows with nothing to learn (real Alpaca has a few empty outputs) and say how many."""
        has_reply = self._reply_flags(split)
        if all(has_reply):
            return
        if not any(has_reply):
            raise LlmkitError(f"{split.origin}: every row has an empty reply, so there is nothing to learn")
        first = split.where(has_reply.index(False))
        split.keep_rows(index for index, keep in enumerate(has_reply) if keep)
        log(
            f"{split.origin}: skipped {has_reply.count(False)} row(s) with an empty reply "
            f"(data.skip_empty_outputs=true), the first at {first}"
        )

    def _reply_flags(self, split: Split) -> list[bool]:
        """Whether each row has a reply to learn, read column-wise (one Arrow read, not a row at a time)."""
        if self.format == "instruction":  # only empty outputs; one of the wrong type is still an error
            column = self.data["output"]
            if column not in split.dataset.column_names:
                return [False] * len(split.dataset)
            return [
                not (output is None or (isinstance(output, str) and not output.strip()))
                for output in column_values(split.dataset, column)
            ]
        # the conversations' shape was checked by check_inputs
        return [has_assistant_reply(value) for value in column_values(split.dataset, self.data["messages"])]

    def _check_optional_input(self, split: Split) -> None:
        column = self.data["input"]
        if column not in split.dataset.column_names:
            return
        for index, value in enumerate(column_values(split.dataset, column)):
            if value is not None and not isinstance(value, str):
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: column '{column}' (data.input) is not text "
                    f"({value!r}); give a string or leave it empty"
                )

    def _check_messages(self, split: Split, need_reply: bool) -> None:
        column = self.data["messages"]
        for index, conversation in enumerate(column_values(split.dataset, column)):
            where = f"{split.origin} {split.where(index)}: column '{column}' (data.messages)"
            if not isinstance(conversation, list) or not conversation:
                raise LlmkitError(f"{where} is not a non-empty list of {{role, content}} messages")
            for number, message in enumerate(conversation, start=1):
                if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                    raise LlmkitError(
                        f"{where}: message {number} is not a {{role, content}} object with text content"
                    )
                role = message.get("role")
                if role not in CHAT_ROLES:
                    raise LlmkitError(
                        f"{where}: message {number} has unknown role {role!r}"
                        f"{did_you_mean(str(role), CHAT_ROLES)}; roles are {', '.join(CHAT_ROLES)}"
                    )
            if need_reply and not has_assistant_reply(conversation):
                raise LlmkitError(
                    f"{where} has no assistant message, so nothing to learn; add the reply{SKIP_HINT}"
                )

    def conversation(self, row: dict[str, Any], with_reply: bool = True) -> list[dict[str, str]]:
        """A row of instruction or chat data as a list of messages."""
        if self.format == "instruction":
            output = row.get(self.data["output"]) if with_reply else None
            return instruction_messages(row[self.data["instruction"]], row.get(self.data["input"]), output)
        messages = [{"role": m["role"], "content": m["content"]} for m in row[self.data["messages"]]]
        if not with_reply:
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
        return messages

    def chat_template(self, tokenizer: PreTrainedTokenizerBase) -> str:
        """The template instruction/chat rows are rendered with (prepare_tokenizer saves it)."""
        return chat_template_for(tokenizer, self.data["use_chat_template"])

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Instruction/chat runs save the template they train with: the model then generates in it."""
        if self.format != "text":
            tokenizer.chat_template = self.chat_template(tokenizer)

    def encode_chunks(
        self, chunks: Iterable[Dataset], tokenizer: PreTrainedTokenizerBase
    ) -> Iterator[Dataset]:
        """Plain text in blocks: a chunk's tail opens the next chunk's first block (the corpus's blocks)."""
        if self.format != "text" or self.data["packing"]:
            yield from super().encode_chunks(chunks, tokenizer)
            return
        from datasets import Dataset

        documents = (document_ids(tokenizer, dataset[self.data["text"]]) for dataset in chunks)
        for blocks in concatenated_block_chunks(documents, self.data["max_length"]):
            yield Dataset.from_dict(blocks)

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        from datasets import Dataset

        max_length = self.data["max_length"]
        if self.format == "text":
            token_lists = document_ids(tokenizer, dataset[self.data["text"]])
            if self.data["packing"]:
                return Dataset.from_dict(
                    pack_examples(document_examples(token_lists, max_length), max_length)
                )
            return Dataset.from_dict(concatenated_blocks(token_lists, max_length))

        template = self.chat_template(tokenizer)
        has_replies = self.format == "chat" or self.data["output"] in dataset.column_names
        if not has_replies:  # a test split without outputs: prompts only, answered by predict()
            prompts = [
                render_chat(tokenizer, self.conversation(row, False), template, add_generation_prompt=True)
                for row in dataset
            ]
            return Dataset.from_dict({"input_ids": tokenizer(prompts, add_special_tokens=False).input_ids})
        examples: list[Example] = []
        truncated = dropped = 0
        for row in dataset:
            try:
                segments = conversation_segments(tokenizer, self.conversation(row), template)
            except ValueError as exc:
                raise LlmkitError(
                    f"the model's chat template cannot be split into prompt and reply ({exc}); "
                    f"set data.use_chat_template=false to use llmkit's template"
                ) from None
            example = segments_to_example(tokenizer, segments, max_length)
            if example is None:
                dropped += 1
                continue
            truncated += example.truncated
            examples.append(example)
        if truncated or dropped:
            log(
                f"{truncated + dropped} of {len(dataset)} examples are longer than "
                f"data.max_length={max_length}: {truncated} truncated, {dropped} dropped (prompt alone "
                f"too long)"
            )
        if not examples:
            raise LlmkitError(
                f"every example's prompt is longer than data.max_length={max_length}; raise data.max_length"
            )
        if self.data["packing"]:
            return Dataset.from_dict(pack_examples(examples, max_length))
        return Dataset.from_dict(
            {"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]}
        )

    def chat_examples(self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> list[Any]:
        """Instruction/chat rows as trained, with the conversation before the last reply (chat checks)."""
        from llmkit.tasks.chat_checks import ChatExample

        if self.format == "text":
            return []
        template = self.chat_template(tokenizer)
        examples = []
        for row in rows:
            messages = self.conversation(row)
            replies = [index for index, m in enumerate(messages) if m["role"] == "assistant"]
            if not replies:
                continue
            segments = conversation_segments(tokenizer, messages, template)
            trained = [index for index, (_, trainable) in enumerate(segments) if trainable]
            if not trained:  # the template renders no reply: nothing carries loss (the checks say so)
                ids = tokenize_segments(tokenizer, segments, 10**9).input_ids
                examples.append(ChatExample(messages[: replies[-1]], ids, [False] * len(ids)))
                continue
            last = trained[-1]
            prompt = tokenize_segments(tokenizer, segments[:last], 10**9).input_ids
            example = segments_to_example(tokenizer, segments, self.data["max_length"])
            if example is None:
                examples.append(ChatExample(messages[: replies[-1]], [], [], dropped=True))
                continue
            mask = [label != IGNORE_INDEX for label in example.labels]
            examples.append(
                ChatExample(
                    messages[: replies[-1]],
                    example.input_ids,
                    mask,
                    example.truncated,
                    prompt_length=len(prompt),
                )
            )
        return examples

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        return CausalLMCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    # -- model ------------------------------------------------------------------------------------
    def check_model(self, model_path: Path) -> None:
        check_causal_lm_length(model_path, self.data["max_length"])

    def auto_class(self) -> type:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def load_model(self, path: Path, **load_options: Any) -> PreTrainedModel:
        self.check_model(path)
        model = load_causal_lm(path, **load_options)
        self.check_loaded_model(model, f"model {path}")
        return model

    def check_loaded_model(self, model: PreTrainedModel, what: str) -> None:
        """With packing: a model (the run's, or a teacher reading the same packed rows) whose attention keeps
        packed documents apart; else one line."""
        if not self.data["packing"]:
            return
        # A KV cache, even an empty one, makes transformers skip the detection of packed documents in
        # position_ids; training never needs it, and generate() still caches (generation_config).
        model.config.use_cache = False
        if not packed_documents_stay_apart(model):
            raise LlmkitError(
                f"{what} ({model.config.model_type}) lets packed documents attend to each other (its "
                f"attention ignores restarted position_ids); set data.packing=false"
            )

    def peft_task_type(self) -> str | None:
        return "CAUSAL_LM"

    def trainer_class(self) -> type:
        return causal_lm_trainer_class()

    def distillation_loss(self) -> str:
        """Each labelled next token's softened vocabulary distribution (plain text, instructions and chat
        alike: the tokens the next-token loss averages)."""
        return "kl"

    # -- inference ----------------------------------------------------------------------------------
    def prompt_text(self, tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> str:
        """What the model continues for a row: the text itself, or the conversation up to the reply."""
        if self.format == "text":
            return row[self.data["text"]]
        template = chat_template_for(tokenizer, True)
        return render_chat(tokenizer, self.conversation(row, False), template, add_generation_prompt=True)

    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        from llmkit.tasks.decoding import generate_from_prompt, greedy

        results = []
        for row in rows:
            generated = generate_from_prompt(
                model,
                tokenizer,
                self.prompt_text(tokenizer, row),
                sampling=greedy(self.data["max_new_tokens"], self.data["repetition_penalty"]),
                templated=self.format != "text",
            )
            results.append({"generated": generated.text})
        return results

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        """Plain text: the model continues each text's opening words; else it answers the last user turn."""
        from llmkit.tasks.decoding import generate_from_prompt, greedy

        samples = []
        for row in rows:
            if self.format == "text":
                words = row[self.data["text"]].split()
                cut = min(REPORT_PROMPT_WORDS, max(1, len(words) // 2))
                prompt, shown = " ".join(words[:cut]), " ".join(words[:cut])
                reference = " ".join(words[cut : cut + REPORT_PROMPT_WORDS * 2])
            else:
                messages = self.conversation(row, with_reply=True)
                asked = [
                    m["content"] for m in self.conversation(row, with_reply=False) if m["role"] == "user"
                ]
                prompt, shown = self.prompt_text(tokenizer, row), asked[-1] if asked else ""
                last = messages[-1] if messages else {}
                reference = last.get("content", "") if last.get("role") == "assistant" else ""
            generated = generate_from_prompt(
                model,
                tokenizer,
                prompt,
                sampling=greedy(
                    min(self.data["max_new_tokens"], REPORT_NEW_TOKENS), self.data["repetition_penalty"]
                ),
                templated=self.format != "text",
            )
            samples.append({"input": shown, "prediction": generated.text.strip(), "reference": reference})
        return samples


def has_assistant_reply(conversation: list[dict[str, str]]) -> bool:
    """Does a (well-formed) conversation have a non-empty assistant message to learn from?"""
    return any(m["role"] == "assistant" and m["content"].strip() for m in conversation)
