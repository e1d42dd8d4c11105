"""One optimizer step's loss is the mean over the step's whole batch, however that batch is split.

``gradient_accumulation_steps=k`` with batches of ``b`` rows (on ``p`` processes) must train exactly as one
batch of ``k*b*p`` rows: the same loss, gradient and logged train loss. transformers gets this right only
for a model whose loss divides by the ``num_items_in_batch`` it is handed (the labelled items of the whole
accumulated batch): it then skips its own division by ``k``. Yet many heads that accept the argument ignore
it (BERT's classification, token-classification, masked-LM and pre-training heads, T5, BART) and return
their micro-batch's mean, which made the loss and gradient ``k`` times too large.

So llmkit never hands ``num_items_in_batch`` to a model. Every loss (a model's own or llmkit's faster ones)
is its micro-batch's mean over the items of a target column, and the step weighs it by the micro-batch's
share of that column's items in the whole step, counted over every process. A loss of several terms over
different items (masked LM + next-sentence) gives each term through ``loss_terms``.
"""

from __future__ import annotations

from typing import Any

from llmkit.models.adaptation import inner_model

IGNORE_INDEX = -100


def step_weighted_trainer(
    base: type, targets: tuple[str, ...], training_targets: tuple[str, ...] = ()
) -> type:
    """Subclass a Trainer so each accumulated micro-batch's mean loss counts by its share of the step's items.

    ``targets`` are the batch columns whose items (entries other than -100) the loss averages, the first
    being the one a single-mean loss is over (``Task.loss_targets``). A batch without the first one (a TRL
    preference batch, whose trainer averages over pairs and divides by the accumulation itself) is left
    to the Trainer. ``base.loss_terms(model, inputs)``, where defined, may return the loss as
    ``{target: micro-batch mean}`` terms, each weighed by its own column's share; None: one mean.
    ``training_targets`` are more such columns that only training batches have (distillation's row numbers:
    the items of a soft loss over every row, when some rows have no labels); evaluation never sees them.
    """

    weighed = targets[0] if targets else None  # the column a single-mean loss is over
    single_mean = len(targets) == 1  # one mean over items (not next-sentence pre-training's two terms)
    targets = (*targets, *training_targets)

    class StepWeightedTrainer(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False  # every loss is a micro-batch mean, weighed here
            self.loss_shifts_labels = predicts_next_token(self.model)
            self.step_items: dict[str, Any] = {}  # target column -> its items in the step, every process

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
            self.step_items = self._count_step_items(batches, device)
            return batches, None

        def training_step(self, model, inputs, num_items_in_batch=None):
            # a weighed loss is the step's already: the Trainer must not divide it by the accumulation
            self.loss_is_scaled_for_ga = weighed in self.step_items
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not model.training or weighed not in self.step_items:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            own_terms = getattr(super(), "loss_terms", None)
            terms = own_terms(model, inputs) if own_terms is not None else None
            if terms is None:
                terms = {weighed: super().compute_loss(model, inputs)}
            return sum(self._weighed(mean, inputs, column) for column, mean in terms.items())

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            if loss is not None and single_mean and weighed in inputs:
                self._tally_evaluation_items(loss, inputs[weighed])
            return loss, logits, labels

        def evaluation_loop(
            self,
            dataloader,
            description: str,
            prediction_loss_only: bool | None = None,
            ignore_keys: list[str] | None = None,
            metric_key_prefix: str = "eval",
        ):
            import torch

            self.evaluation_items = torch.zeros(2, dtype=torch.float64, device=self.args.device)
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            self._report_item_mean(output.metrics, metric_key_prefix)
            return output

        def _tally_evaluation_items(self, mean: Any, target: Any) -> None:
            """Add a batch's loss sum and items: its mean times its items, nothing for a batch without items
            (whose mean is 0/0)."""
            import torch

            items = count_items(target, self.loss_shifts_labels and weighed == "labels").to(mean.device)
            batch_sum = torch.where(items > 0, mean.detach().double(), torch.zeros((), dtype=torch.float64))
            self.evaluation_items += torch.stack([batch_sum * items, items.double()]).to(self.args.device)

        def _report_item_mean(self, metrics: dict[str, float], prefix: str) -> None:
            """``{prefix}_loss``: the mean over every labelled item of the evaluation (the Trainer's is a mean
            of batch means weighed by rows, NaN as soon as one batch has no item)."""
            key = f"{prefix}_loss"
            totals = self.evaluation_items
            if self.args.world_size > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            loss_sum, items = totals.tolist()
            if key not in metrics or items == 0:
                return
            metrics[key] = loss_sum / items
            if f"{prefix}_perplexity" in metrics:  # a causal LM's, from the Trainer's mean
                from llmkit.tasks.causal_lm import perplexity

                metrics[f"{prefix}_perplexity"] = perplexity(metrics[key])

        def _weighed(self, mean: Any, inputs: dict[str, Any], column: str) -> Any:
            """A micro-batch's mean times its part of the step's ``column`` items, times the processes whose
            gradients DDP averages (so their average is the sum over the step's items). Without items the
            mean is 0/0: the term is 0 (still on the graph, which DDP needs)."""
            import torch

            items = count_items(inputs[column], self.loss_shifts_labels and column == "labels")
            share = items * self._processes() / self.step_items[column].clamp(min=1)
            return torch.where(items > 0, mean, torch.zeros_like(mean)) * share

        def _count_step_items(self, batches: list[dict[str, Any]], device: Any) -> dict[str, Any]:
            import torch

            present = [column for column in targets if batches and column in batches[0]]
            if not present:
                return {}
            counts = torch.stack(
                [
                    sum(count_items(batch[c], self.loss_shifts_labels and c == "labels") for batch in batches)
                    for c in present
                ]
            ).to(device)
            if self._processes() > 1:
                counts = self.accelerator.gather(counts).view(-1, len(present)).sum(dim=0)
            return dict(zip(present, counts, strict=True))

        def _processes(self) -> int:
            """Processes whose items make up a step: all of them, unless ``average_tokens_across_devices``
            is turned off (each process's loss is then its own items' mean, and DDP averages those)."""
            return self.args.world_size if self.args.average_tokens_across_devices else 1

    StepWeightedTrainer.__name__ = f"StepWeighted{base.__name__}"
    return StepWeightedTrainer


def count_items(target: Any, shifted: bool) -> Any:
    """Entries of a target column that a loss averages: all but -100 (a next-token loss skips position 0)."""
    import torch

    if not torch.is_tensor(target):
        target = torch.as_tensor(target)
    if shifted:
        target = target[..., 1:]
    return target.ne(IGNORE_INDEX).sum()


def predicts_next_token(model: Any) -> bool:
    """Does the model's loss predict label i+1 at position i (a decoder-only LM, as in llmkit's own causal
    loss)? Its rows' first labels are then never targets."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return type(inner_model(model)).__name__ in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
