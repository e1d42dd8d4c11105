"""SetFit on llmkit's spine: a recipe's ``setfit:`` section trains the classifier in SetFit's two stages.

1. **The body, contrastively.** From the training rows (few: ``data.shots``), seeded pairs: for each row,
   ``setfit.iterations`` pairs with a row of its class (target 1) and as many with a row of another class
   (target 0), as SetFit generates them; the sentence-transformers body learns from them with
   CosineSimilarityLoss through sentence-transformers' own Trainer, under the recipe's ``training.*``
   settings (learning rate, batch size, epochs or max_steps, seed, precision).
2. **The head.** The trained body embeds the training rows, scikit-learn's LogisticRegression (SetFit's
   default head) fits them, and its coefficients become the model's Linear head exactly
   (``llmkit.models.sentence_classifier.head_from_logistic_regression``).

How it fits the spine: the run's model is a ``SentenceClassifier`` (logits from ``input_ids``), and the run's
Trainer is the task's with :func:`setfit_trainer`'s ``train`` (the two stages) and ``save_model`` (the body's
folder plus the head); everything after training -- ``eval_*`` on validation by the task's metrics, the test
split, the report, ``llmkit evaluate`` and ``predict`` -- is the classification path as it is.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.errors import LlmkitError, missing_package
from llmkit.core.progress import log, log_lines_callback, quiet_library_progress
from llmkit.data.files import column_values

if TYPE_CHECKING:
    from llmkit.data.files import Split
    from llmkit.models.sentence_classifier import SentenceClassifier
    from llmkit.recipe.loader import Recipe
    from llmkit.tasks import Task

#: Settings of checkpoints and of choosing among them, which SetFit's two stages have none of.
CHECKPOINT_SETTINGS = ("save_strategy", "load_best_model_at_end", "early_stopping_patience")
#: A contrastive pair: two texts and the cosine similarity the body should give them (1 or 0).
Pair = tuple[str, str, float]


@dataclass(frozen=True)
class SetFitPlan:
    """What the two stages need: the ``setfit:`` settings and the training rows as texts and class ids."""

    settings: dict[str, Any]
    texts: list[str]
    labels: list[int]
    seed: int


def setfit_plan(recipe: Recipe, task: Task, train: Split) -> SetFitPlan | None:
    """The plan of a recipe with a ``setfit:`` section (None without one), once ``check_data`` has settled
    the problem and the labels; what SetFit cannot train is refused in one line."""
    if recipe.setfit is None:
        return None
    where = f"recipe {recipe.source}"
    require_setfit_libraries(where)
    problem = getattr(task, "problem", None)
    if problem != "single_label":
        raise LlmkitError(
            f"{where}: setfit trains single-label classifiers, and data.problem is {problem}; remove the "
            f"setfit section to fine-tune this problem end to end"
        )
    if task.data["text_pair"]:
        raise LlmkitError(
            f"{where}: setfit embeds one text per row, and data.text_pair is set; remove data.text_pair or "
            f"the setfit section"
        )
    checkpointing = [
        key for key in CHECKPOINT_SETTINGS if recipe.training.get(key) not in (None, False, "no")
    ]
    if checkpointing:
        raise LlmkitError(
            f"{where}: training.{checkpointing[0]} needs checkpoints of one training loop, and setfit trains "
            f"in two stages without any; remove training.{checkpointing[0]}"
        )
    label_ids = {label: index for index, label in enumerate(task.labels)}
    labels = [
        task.label_vector(value, label_ids) for value in column_values(train.dataset, task.data["label"])
    ]
    missing = [task.label_names[index] for index in range(len(task.labels)) if index not in set(labels)]
    if missing:
        raise LlmkitError(
            f"{where}: class {missing[0]!r} has no training row, and SetFit's head learns each class from "
            f"its rows; add rows of it or drop it from data.label_names"
        )
    texts = [str(text) for text in column_values(train.dataset, task.data["text"])]
    return SetFitPlan(dict(recipe.setfit), texts, labels, recipe.training["seed"])


def require_setfit_libraries(where: str) -> None:
    """scikit-learn (the head) and sentence-transformers (the body) are extras: say how to get them;
    scikit-learn first, as sentence-transformers imports it too."""
    for module, package in (("sklearn", "scikit-learn"), ("sentence_transformers", "sentence-transformers")):
        try:
            __import__(module)
        except ImportError:
            raise missing_package(f"{where}: setfit", package, "setfit") from None


def contrastive_pairs(texts: list[str], labels: list[int], iterations: int, seed: int) -> list[Pair]:
    """For each row, ``iterations`` times: a row of its class (another row when the class has one) with
    target 1, and a row of another class with target 0; seeded, so a rerun trains on the same pairs."""
    generator = random.Random(seed)
    rows_of: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        rows_of.setdefault(label, []).append(index)
    same = {index: [j for j in rows_of[label] if j != index] or [index] for index, label in enumerate(labels)}
    other = {label: [j for j, o in enumerate(labels) if o != label] for label in rows_of}
    pairs: list[Pair] = []
    for _ in range(iterations):
        for index, label in enumerate(labels):
            pairs.append((texts[index], texts[generator.choice(same[index])], 1.0))
            pairs.append((texts[index], texts[generator.choice(other[label])], 0.0))
    return pairs


def load_setfit_model(
    task: Task, model_path: Path, max_length: int, load_options: dict[str, Any]
) -> SentenceClassifier:
    """The model a SetFit run starts from: the folder as a sentence-transformers body (a plain encoder with
    mean pooling) and a head for the task's labels, which stage 2 sets."""
    from llmkit.models.sentence_classifier import SentenceClassifier, load_sentence_transformer

    options = {key: value for key, value in load_options.items() if key in ("dtype", "trust_remote_code")}
    try:
        with quiet_library_progress(errors_only=True):
            body = load_sentence_transformer(model_path, max_length, **options)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(
            f"model folder {model_path}: cannot load it as a sentence-transformers body ({first_line}); "
            f"check the folder"
        ) from None
    return SentenceClassifier(body, list(task.label_names))


def train_body(body: Any, pairs: list[Pair], args: Any) -> Any:
    """Stage 1: the body on the pairs, CosineSimilarityLoss, through sentence-transformers' Trainer with the
    run's schedule; returns that Trainer (its output's metrics and log history are the run's)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    class BodyTrainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            """None: llmkit writes the run's model card from its report."""

    first, second, targets = (list(column) for column in zip(*pairs, strict=True))
    rows = Dataset.from_dict({"sentence_a": first, "sentence_b": second, "label": targets})
    with tempfile.TemporaryDirectory(prefix="llmkit-setfit-") as folder:
        body_args = SentenceTransformerTrainingArguments(
            output_dir=folder,
            num_train_epochs=args.num_train_epochs,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.per_device_train_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            lr_scheduler_type=args.lr_scheduler_type,
            seed=args.seed,
            bf16=args.bf16,
            fp16=args.fp16,
            use_cpu=args.use_cpu,
            logging_steps=args.logging_steps,
            disable_tqdm=args.disable_tqdm,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
        )
        trainer = BodyTrainer(model=body, args=body_args, train_dataset=rows, loss=CosineSimilarityLoss(body))
        if (
            args.disable_tqdm
        ):  # as the run's own Trainer: throttled stderr lines, not a dict per log on stdout
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
            trainer.add_callback(log_lines_callback())
        trainer.output = trainer.train()
    return trainer


def fit_head(model: SentenceClassifier, plan: SetFitPlan, batch_size: int) -> None:
    """Stage 2: LogisticRegression on the trained body's embeddings of the training rows, set as the head."""
    from sklearn.linear_model import LogisticRegression

    from llmkit.models.sentence_classifier import head_from_logistic_regression

    embeddings = model.embed(plan.texts, batch_size)
    classifier = LogisticRegression(
        C=plan.settings["head_c"], max_iter=plan.settings["head_max_iter"], random_state=plan.seed
    )
    classifier.fit(embeddings, plan.labels)
    model.set_head(*head_from_logistic_regression(classifier))


def setfit_trainer(base: type, plan: SetFitPlan) -> type:
    """``base`` (the task's Trainer) training in SetFit's two stages and saving the model's own folder."""
    from transformers.trainer_utils import TrainOutput

    class SetFitTrainer(base):
        def train(self, resume_from_checkpoint: str | None = None, **kwargs: Any) -> Any:
            """Stage 1 (the body on contrastive pairs), then stage 2 (the head); no checkpoints to resume."""
            started = time.perf_counter()
            iterations = plan.settings["iterations"]
            pairs = contrastive_pairs(plan.texts, plan.labels, iterations, plan.seed)
            rows = len(plan.texts)
            log(f"setfit: {len(pairs):,} contrastive pairs from {rows:,} rows ({iterations} iterations)")
            body_trainer = train_body(self.model.body, pairs, self.args)
            with quiet_library_progress():
                fit_head(self.model, plan, self.args.per_device_eval_batch_size)
            self.model.eval()
            output = body_trainer.output
            self.state.global_step = output.global_step
            self.state.max_steps = body_trainer.state.max_steps
            self.state.epoch = body_trainer.state.epoch
            self.state.log_history = list(body_trainer.state.log_history)
            body_metrics = {
                key: value for key, value in output.metrics.items() if key != "num_input_tokens_seen"
            }
            metrics = {
                **body_metrics,
                "train_runtime": round(time.perf_counter() - started, 4),
                "setfit_pairs": len(pairs),
            }
            return TrainOutput(output.global_step, output.training_loss, metrics)

        def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
            """The loop's scores without ``model_preparation_time``: the Trainer times the model's first
            preparation when no training loop of its own prepared it, which here is every run."""
            output = super().evaluation_loop(*args, **kwargs)
            for key in [key for key in output.metrics if key.endswith("_model_preparation_time")]:
                del output.metrics[key]
            return output

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            """The body's sentence-transformers folder with the labels and the head (safetensors)."""
            if self.args.should_save:
                self.model.save_pretrained(output_dir or self.args.output_dir)

    return SetFitTrainer
