"""GRPO: a chat model learns from rewards on its own sampled completions, with TRL's GRPOTrainer.

Rows hold a ``prompt`` (``data.prompt``: text, one user turn, or a list of ``{role, content}`` messages) and
whatever columns the rewards read (``data.answer``: the exact answer). Each prompt is rendered with the
model's chat template by the code preference tuning and ``llmkit generate --chat`` use
(:func:`llmkit.tasks.causal_lm.render_chat`), so the prompt GRPO samples from is the one inference sees; a
prompt over ``data.max_prompt_length`` tokens is an error naming its row (or, with ``data.skip_long_prompts``,
left out and counted).

The ``grpo:`` section sets how GRPO samples and learns: ``num_generations`` completions per prompt (compared
within their group), ``max_completion_length``, the KL ``beta`` (0: no reference model), ``temperature``, and
``rewards``, a list of built-in rewards, functions and reward-model runs with weights
(:mod:`llmkit.tasks.rewards`). Learning rate, batch size (in completions: ``per_device_train_batch_size`` x
``gradient_accumulation_steps`` must be a multiple of ``num_generations``) and steps are the ``training:``
section's; LoRA is the ``peft:`` section's (the reference is then the base model with the adapter switched
off). Generation runs in transformers (CPU or GPU); vLLM is not used.

Logs: TRL's per-reward means (``rewards/<name>/mean``), the total ``reward`` and the completion lengths reach
``log_history.json``; every logging step also keeps a few sampled completions with their rewards, which the
report shows. Evaluation generates one greedy completion per held-out prompt and reports ``exact_match`` (its
final answer against ``data.answer``), each reward's mean and the completion length; `llmkit evaluate` runs
the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.core.progress import log
from llmkit.data.files import Split, column_values, require_columns
from llmkit.tasks.base import LengthLimit, Task
from llmkit.tasks.causal_lm import (
    carry_chat_template,
    chat_prompt_messages,
    checked_format,
    drop_reference_adapter,
    generate_left_padded,
    load_causal_lm,
    render_chat,
    require_causal_lm,
    required_chat_template,
    tokenize_segments,
)
from llmkit.tasks.rewards import (
    PROMPT_MESSAGES,
    RewardFunction,
    RewardSpec,
    ScoredCompletions,
    check_rewards,
    reward_function,
    score_completions,
    settle_files,
)

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FORMATS = ("auto", "text", "chat")
#: The column of the encoded rows TRL samples from: the prompt rendered with the chat template.
PROMPT = "prompt"
#: Encoded-only bookkeeping: each rendered prompt's tokens (checked, then dropped).
PROMPT_TOKENS = "prompt_tokens"
#: TRL's loss types (GRPOConfig.loss_type).
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")


class GrpoTask(Task):
    name = "grpo"
    default_model = "smollm2-135m"
    pipeline_task = "text-generation"
    prediction_keys = ("generated",)
    headline_metric = "exact_match"
    other_headline_metrics = ("reward",)
    #: An evaluated split needs its prompts only (the rewards read what columns they need).
    target_columns = (PROMPT,)
    data_defaults: ClassVar[dict[str, Any]] = {
        "format": "auto",  # text (one user turn) | chat ({role, content} messages) | auto: from the first row
        "prompt": "prompt",
        "answer": "answer",  # the exact answers: exact_match and the answer reward; null: none
        "use_chat_template": True,  # false: llmkit's documented template (a model without one needs it)
        "max_prompt_length": 256,  # tokens of a rendered prompt; a longer one is an error naming its row
        "skip_long_prompts": False,  # true: longer prompts are left out (counted), not an error
    }
    options_section = "grpo"
    options_defaults: ClassVar[dict[str, Any]] = {
        # built-ins (answer, format, length), functions ({function: MODULE:FUNCTION}) and reward-model runs
        # ({model: RUN_FOLDER}), each with a weight
        "rewards": [{"name": "answer", "weight": 1.0}, {"name": "format", "weight": 0.5}],
        "num_generations": 4,  # completions sampled per prompt, compared within their group
        "max_completion_length": 64,  # new tokens per completion (training and evaluation)
        "beta": 0.0,  # KL penalty towards the starting model (0: none, and no reference model)
        "temperature": 1.0,  # sampling temperature of the training completions
        "top_p": 1.0,
        "loss_type": "dapo",  # TRL's: grpo, dr_grpo, dapo, bnpo, ...
        "scale_rewards": "group",  # group | batch | none: how advantages are scaled
        "num_iterations": 1,  # optimisation passes over each generated batch
        "epsilon": 0.2,  # the clipping range of the policy ratio
        "report_completions": 2,  # sampled completions kept per logging step for the report (0: none)
    }
    training_defaults: ClassVar[dict[str, Any]] = {
        "per_device_train_batch_size": 8,  # completions: 2 prompts x 4 generations
        "per_device_eval_batch_size": 16,  # prompts, one greedy completion each
        "learning_rate": 1e-5,
        "gradient_checkpointing": False,  # TRL's configs default it on; llmkit leaves it to the recipe
        "eval_on_start": True,  # held-out exact match before training too (eval_before_*)
        "logging_steps": 5,
        "include_num_input_tokens_seen": "no",  # GRPO's batches are prompts; TRL counts generated tokens
    }

    def __init__(self, data: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        super().__init__(data, options)
        self.format: str = checked_format(data, FORMATS)
        self.rewards: list[RewardSpec] = check_rewards(self.options["rewards"], data["answer"])
        #: A split with the answers is scored, one without (a test split) predicted.
        self.target_columns = (data["answer"],) if data["answer"] else (PROMPT,)
        check_options(self.options)
        if not isinstance(data["max_prompt_length"], int) or data["max_prompt_length"] < 1:
            raise LlmkitError(
                f"data.max_prompt_length must be a positive number of tokens, got "
                f"{data['max_prompt_length']!r}"
            )

    @classmethod
    def settle_options(cls, options: dict[str, Any], recipe_folder: Path) -> dict[str, Any]:
        """Function rewards are read from ``MODULE.py`` beside the recipe, model rewards from a run folder
        relative to it: their absolute paths go into the options."""
        return {**options, "rewards": settle_files(options.get("rewards"), recipe_folder)}

    # -- data -------------------------------------------------------------------------------------
    def check_inputs(self, split: Split) -> None:
        if self.format == "auto":
            require_columns(split, {"prompt": self.data["prompt"]})
            first = split.dataset[0][self.data["prompt"]] if len(split.dataset) else ""
            self.format = "chat" if isinstance(first, list) else "text"
        require_columns(split, {"prompt": self.data["prompt"]})
        for index, value in enumerate(column_values(split.dataset, self.data["prompt"])):
            self.prompt_messages(value, split, index)

    def check_data(self, splits: dict[str, Split]) -> None:
        """Prompts everywhere; in every scored split, the answers and the columns the rewards read (a test
        split without answers is predicted)."""
        for split in splits.values():
            self.check_inputs(split)
            if split.role == "test" and not has_columns(split, self.target_columns):
                continue
            no_answers = (
                "or data.answer=null for rows without answers (no exact match; the rewards judge alone)"
            )
            require_columns(split, {"answer": self.data["answer"]}, also=no_answers)
            for spec in self.rewards:
                column = spec.settings.get("column")
                if spec.kind == "answer" and column not in split.dataset.column_names:
                    raise LlmkitError(
                        f"{split.origin}: no column '{column}' for {spec.where}; columns are: "
                        f"{', '.join(split.dataset.column_names)}; set the reward's column: (or data.answer)"
                    )

    def prompt_messages(self, value: Any, split: Split | None = None, index: int = 0) -> list[dict[str, str]]:
        column = self.data["prompt"]
        where = f"{split.origin} {split.where(index)}: column '{column}' (data.prompt)" if split else "prompt"
        shape = self.format if self.format != "auto" else "chat" if isinstance(value, list) else "text"
        return chat_prompt_messages(value, shape, where)

    # -- encoding ---------------------------------------------------------------------------------
    def chat_template(self, tokenizer: PreTrainedTokenizerBase) -> str:
        return required_chat_template(tokenizer, self.data["use_chat_template"], "GRPO prompts")

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        carry_chat_template(tokenizer, self.chat_template(tokenizer))

    def encoding_state(self) -> dict[str, Any]:
        return {"format": self.format, "prompt_messages": self.keeps_messages()}

    def keeps_messages(self) -> bool:
        """A model reward renders each prompt with its own template: the rows keep the prompt's messages."""
        return any(spec.kind == "model" for spec in self.rewards)

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        """Each row with its prompt rendered (``prompt``) and counted (``prompt_tokens``), and for a model
        reward its messages (``prompt_messages``); the other columns stay for the rewards."""
        template = self.chat_template(tokenizer)
        rendered, lengths, conversations = [], [], []
        for value in dataset[self.data["prompt"]]:
            messages = self.prompt_messages(value)
            text = render_chat(tokenizer, messages, template, add_generation_prompt=True)
            rendered.append(text)
            lengths.append(len(prompt_ids(tokenizer, text)))
            conversations.append(messages)
        encoded = dataset
        for column in {self.data["prompt"], PROMPT, PROMPT_MESSAGES} & set(dataset.column_names):
            encoded = encoded.remove_columns(column)
        if self.keeps_messages():
            encoded = encoded.add_column(PROMPT_MESSAGES, conversations)
        return encoded.add_column(PROMPT, rendered).add_column(PROMPT_TOKENS, lengths)

    def encoding_metrics(self, role: str, dataset: Dataset) -> dict[str, int]:
        prefix = "eval" if role == "validation" else role
        too_long = sum(n > self.data["max_prompt_length"] for n in dataset[PROMPT_TOKENS])
        return {f"{prefix}_long_prompts": too_long} if self.data["skip_long_prompts"] else {}

    def prepare_evaluation(self, role: str, split: Split, encoded: Dataset) -> Dataset:
        """Refuse (or, with ``data.skip_long_prompts``, drop) prompts over ``data.max_prompt_length``."""
        limit = self.data["max_prompt_length"]
        lengths = encoded[PROMPT_TOKENS]
        long = [index for index, n in enumerate(lengths) if n > limit]
        if long and not self.data["skip_long_prompts"]:
            raise LlmkitError(
                f"{split.origin} {split.where(long[0])}: the prompt is {lengths[long[0]]} tokens as "
                f"rendered, over data.max_prompt_length={limit} ({len(long)} such row(s)); raise "
                f"data.max_prompt_length, shorten the prompt, or set data.skip_long_prompts=true to leave "
                f"such rows out"
            )
        if long:
            if len(long) == len(lengths):
                raise LlmkitError(
                    f"{split.origin}: every prompt is over data.max_prompt_length={limit}; raise it"
                )
            log(
                f"{split.origin}: {len(long)} of {len(lengths)} prompts over data.max_prompt_length={limit}: "
                f"left out"
            )
            skipped = set(long)
            encoded = encoded.select([i for i in range(len(lengths)) if i not in skipped])
        return encoded.remove_columns(PROMPT_TOKENS)

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        return lambda features: features  # TRL's GRPOTrainer batches rows as they are

    def example_lengths(self, encoded: Dataset) -> list[int]:
        return list(encoded[PROMPT_TOKENS]) if PROMPT_TOKENS in encoded.column_names else []

    def length_limit(self) -> LengthLimit:
        """A prompt's rendered tokens against data.max_prompt_length (data.max_length is not used)."""
        effect = "left out" if self.data["skip_long_prompts"] else "refused: an error naming the row"
        return LengthLimit("max_prompt_length", self.data["max_prompt_length"], effect, counts_at_limit=False)

    def describe_example(self, batch: Any, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        row = batch[0]
        return [f"prompt as sampled from ({row.get(PROMPT_TOKENS, '?')} tokens): {row[PROMPT]!r}"]

    # -- model ------------------------------------------------------------------------------------
    def check_model(self, model_path: Path) -> None:
        """A model that generates, whose context holds a prompt and its completion."""
        config = require_causal_lm(model_path, str(model_path))
        context = config.get("max_position_embeddings") or config.get("n_positions")
        prompt, completion = self.data["max_prompt_length"], self.options["max_completion_length"]
        if isinstance(context, int) and prompt + completion > context:
            raise LlmkitError(
                f"data.max_prompt_length={prompt} + grpo.max_completion_length={completion} tokens is more "
                f"than the model's context ({context} positions); lower them to {context} or less together"
            )

    def load_model(self, path: Path, **load_options: Any) -> PreTrainedModel:
        self.check_model(path)
        return load_causal_lm(path, **load_options)

    def auto_class(self) -> type:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def peft_task_type(self) -> str | None:
        return "CAUSAL_LM"

    def loss_targets(self) -> tuple[str, ...]:
        return ()  # TRL's loss is its own mean, divided by the accumulation by TRL's trainer

    def trainer_class(self) -> type:
        return grpo_trainer_class(self)

    def arguments_class(self) -> type:
        return grpo_config_class(self.options, [spec.weight for spec in self.rewards])

    # -- rewards and evaluation ---------------------------------------------------------------------
    def reward_functions(self) -> dict[str, RewardFunction]:
        """Each reward as TRL calls it, by label (a function file is imported here, once)."""
        return {spec.label: reward_function(spec) for spec in self.rewards}

    def reward_weights(self) -> dict[str, float]:
        return {spec.label: spec.weight for spec in self.rewards}

    def answer_column(self) -> str | None:
        return self.data["answer"] or None

    # -- inference ----------------------------------------------------------------------------------
    def prompt_text(self, tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> str:
        messages = self.prompt_messages(row[self.data["prompt"]])
        return render_chat(tokenizer, messages, tokenizer.chat_template, add_generation_prompt=True)

    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        texts = greedy_completions(
            model,
            tokenizer,
            [self.prompt_text(tokenizer, row) for row in rows],
            self.options["max_completion_length"],
            batch_size=8,
        )[0]
        return [{"generated": text} for text in texts]

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        """The trained model's greedy answer to each prompt; the reference is the row's answer."""
        texts = [prediction["generated"] for prediction in self.predict(model, tokenizer, rows)]
        samples = []
        for row, text in zip(rows, texts, strict=True):
            messages = self.prompt_messages(row[self.data["prompt"]])
            answer = row.get(self.data["answer"]) if self.data["answer"] else None
            samples.append(
                {
                    "input": messages[-1]["content"],
                    "prediction": text.strip(),
                    "reference": "" if answer is None else str(answer),
                }
            )
        return samples


def has_columns(split: Split, columns: tuple[str, ...]) -> bool:
    return all(column in split.dataset.column_names for column in columns)


# -- options ------------------------------------------------------------------------------------------
def check_options(options: dict[str, Any]) -> None:
    """The ``grpo:`` section's numbers and choices (the rewards are checked by ``check_rewards``)."""
    for key, low in (("num_generations", 2), ("max_completion_length", 1), ("num_iterations", 1)):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise LlmkitError(f"grpo.{key} must be a whole number of at least {low}, got {value!r}")
    for key in ("beta", "temperature", "top_p", "epsilon"):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise LlmkitError(f"grpo.{key} must be a number of at least 0, got {value!r}")
    if options["temperature"] == 0:
        raise LlmkitError("grpo.temperature must be above 0: GRPO compares sampled completions")
    if not 0 < options["top_p"] <= 1:
        raise LlmkitError(f"grpo.top_p must be in (0, 1], got {options['top_p']!r}")
    for key, choices in (("loss_type", LOSS_TYPES), ("scale_rewards", SCALE_REWARDS)):
        if options[key] not in choices:
            raise LlmkitError(
                f"grpo.{key} must be one of {', '.join(choices)}, got {options[key]!r}"
                f"{did_you_mean(str(options[key]), choices)}"
            )
    keep = options["report_completions"]
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise LlmkitError(f"grpo.report_completions must be a whole number of at least 0, got {keep!r}")


def config_settings(options: dict[str, Any], weights: list[float]) -> dict[str, Any]:
    """The GRPOConfig fields the ``grpo:`` section sets (``weights``: the rewards', in their order)."""
    return {
        "reward_weights": list(weights),
        "num_generations": options["num_generations"],
        "num_generations_eval": 1,  # llmkit's evaluation: one greedy completion a prompt (evaluation_loop)
        "max_completion_length": options["max_completion_length"],
        "beta": float(options["beta"]),
        "temperature": float(options["temperature"]),
        "top_p": float(options["top_p"]),
        "loss_type": options["loss_type"],
        "scale_rewards": options["scale_rewards"],
        "num_iterations": options["num_iterations"],
        "epsilon": float(options["epsilon"]),
        "use_vllm": False,
        "log_completions": False,  # llmkit keeps its own samples for the report
    }


def grpo_config_class(options: dict[str, Any], weights: list[float]) -> type:
    """GRPOConfig with the ``grpo:`` section's fields set before TRL checks them, and llmkit's one-line
    check of the batch first (TRL counts it in completions, which a recipe author may not expect)."""
    from trl import GRPOConfig

    settings = config_settings(options, weights)

    class LlmkitGRPOConfig(GRPOConfig):
        def __post_init__(self) -> None:
            for key, value in settings.items():
                setattr(self, key, value)
            batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
            if batch % self.num_generations:
                raise ValueError(
                    f"training.per_device_train_batch_size x gradient_accumulation_steps = {batch} "
                    f"completions a step must be a multiple of grpo.num_generations={self.num_generations} "
                    f"(each prompt's completions are compared together)"
                )
            super().__post_init__()
            self.__class__ = GRPOConfig  # settled: a plain GRPOConfig from here on (the Trainer pickles it)

    return LlmkitGRPOConfig


# -- generation and scoring ---------------------------------------------------------------------------
def prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """A rendered prompt's tokens, as training, evaluation and `llmkit validate` count and feed them."""
    return tokenize_segments(tokenizer, [(text, False)], 10**9).input_ids


def greedy_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    eos_token_ids: list[int] | None = None,
) -> tuple[list[str], list[list[int]]]:
    """One greedy completion per rendered prompt (texts without special tokens, and their token ids up to and
    including the end of turn), in batches of left-padded prompts."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = set(eos_token_ids or []) | {tokenizer.eos_token_id}
    texts, ids = [], []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            batch = [prompt_ids(tokenizer, text) for text in prompts[start : start + batch_size]]
            with torch.no_grad():
                new = generate_left_padded(model, batch, pad, max_new_tokens, eos_token_ids=sorted(stops))
            for row in new.tolist():
                end = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
                ids.append(row[:end])
                texts.append(tokenizer.decode(row[:end], skip_special_tokens=True))
    finally:
        model.train(was_training)
    return texts, ids


def grpo_trainer_class(task: GrpoTask) -> type:
    """TRL's GRPOTrainer on llmkit's rendered prompts, its rewards and its evaluation."""
    from transformers.trainer_utils import EvalLoopOutput
    from trl import GRPOTrainer

    class GrpoTrainer(GRPOTrainer):
        def __init__(
            self,
            model,
            args,
            train_dataset,
            eval_dataset=None,
            processing_class=None,
            callbacks=None,
            **unused: Any,  # the spine's collator and metric hooks: GRPOTrainer batches and scores itself
        ) -> None:
            self.reward_labels = task.reward_functions()
            #: Sampled completions with their rewards, a few per logging step (run_stats.json, the report).
            self.completion_samples: list[dict[str, Any]] = []
            #: The last evaluation's per-prompt outcomes (`llmkit evaluate` resamples them).
            self.scored_units: Any = None
            super().__init__(
                model=model,
                reward_funcs=list(self.reward_labels.values()),
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                callbacks=callbacks,
            )
            drop_reference_adapter(self.model)

        def _send_telemetry(self) -> None:
            return

        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            return

        def _tokenize_prompts(self, prompts: list):
            """Rendered prompts tokenized as llmkit counts them (``prompt_ids``), not re-tokenized by TRL."""
            if prompts and isinstance(prompts[0], str):
                return [prompt_ids(self.processing_class, text) for text in prompts], None, {}
            return super()._tokenize_prompts(prompts)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            keep = task.options["report_completions"]
            if (
                keep and "loss" in logs and self.model.training and self._logs["prompt"]
            ):  # a training step's log
                self._keep_samples(keep)
            super().log(logs, start_time)

        def _keep_samples(self, keep: int) -> None:
            """The first ``keep`` completions of the last generated batch (one prompt's group), rewarded."""
            prompts, completions = list(self._logs["prompt"]), list(self._logs["completion"])
            rewards = {label: list(values) for label, values in self._logs["rewards"].items()}
            for index in range(min(keep, len(completions))):
                self.completion_samples.append(
                    {
                        "step": self.state.global_step,
                        "prompt": prompts[index],
                        "completion": completions[index],
                        "rewards": {
                            label: values[index] for label, values in rewards.items() if index < len(values)
                        },
                    }
                )

        def evaluation_loop(
            self,
            dataloader,
            description,
            prediction_loss_only=None,
            ignore_keys=None,
            metric_key_prefix="eval",
        ):
            """One greedy completion per prompt of the split, in the split's order, scored by every reward and
            (where the rows have answers) by exact match of the final answer."""
            dataset = dataloader.dataset
            scored = self.score_split(dataset)
            self.scored_units = scored
            metrics = {f"{metric_key_prefix}_{key}": value for key, value in scored.metrics().items()}
            return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(dataset))

        def score_split(self, dataset) -> ScoredCompletions:
            rows = dataset.to_list()
            # in the run's precision, whether the Trainer has prepared the model (training) or not (`llmkit
            # evaluate`): a prepared model's forward autocasts already, an unprepared one's would not
            with self.accelerator.autocast():
                texts, ids = greedy_completions(
                    self.model,
                    self.processing_class,
                    [row[PROMPT] for row in rows],
                    task.options["max_completion_length"],
                    self.args.per_device_eval_batch_size,
                    self.eos_token_ids,
                )
            columns = {key: [row[key] for row in rows] for key in dataset.column_names if key != PROMPT}
            return score_completions(
                self.reward_labels,
                task.reward_weights(),
                [row[PROMPT] for row in rows],
                texts,
                ids,
                columns,
                task.answer_column(),
                trainer_state=self.state,
                log_extra=lambda *args, **kwargs: None,
                log_metric=lambda *args, **kwargs: None,
            )

    return GrpoTrainer
