"""Fill-mask: masked-LM training (domain adaptation, or pre-training from scratch) and mask filling.

Text comes from a column or a ``.txt`` file (a line per row, or a document per row with
``data.txt_unit: paragraph``). Examples are either kept line by line (each line of a row, truncated to
``max_length``) or concatenated and cut into blocks of ``max_length`` tokens. Masking is dynamic (a new mask
every epoch), optionally over whole words. A base model without an MLM head (such as the bundled MiniLM)
gets a new head whose decoder is tied to the input embeddings. With ``data.next_sentence`` a BERT also
learns next-sentence prediction on pairs of a document's lines (``llmkit.tasks.next_sentence``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.core.progress import log, quiet_library_progress
from llmkit.data.files import TXT_UNITS, Split, require_columns, require_text
from llmkit.data.token_blocks import BlockCutter, cut_chunks
from llmkit.models.adaptation import from_pretrained, inner_model
from llmkit.tasks import next_sentence
from llmkit.tasks.base import FAST_LOSS_COMPILE_REFUSAL, AuditColumns, Task, argmax_logits

if TYPE_CHECKING:
    from pathlib import Path

    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: What users type for a mask, whatever the model's own token is (BERT: [MASK], RoBERTa: <mask>).
MASK_PLACEHOLDER = re.compile(r"\[mask\]|<mask>", re.IGNORECASE)
PREDICT_BATCH_SIZE = 32


def require_mask_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Masked-LM needs a mask token to put in; a decoder's tokenizer has none."""
    if tokenizer.mask_token is None:
        raise LlmkitError(
            f"the tokenizer ({type(tokenizer).__name__}) has no mask token, so it cannot do masked-LM; "
            f"use an encoder model such as minilm-l6 or a BERT/RoBERTa folder"
        )


class FillMaskTask(Task):
    name = "fill-mask"
    default_model = "minilm-l6"
    pipeline_task = "fill-mask"
    prediction_keys = ("masks",)
    headline_metric = "masked_accuracy"
    reports_perplexity = True
    distills = True
    scratch_style = "encoder"
    streams = True
    data_defaults: ClassVar[dict[str, Any]] = {
        "text": "text",
        "line_by_line": True,  # false: concatenate all text and cut it into max_length blocks
        "mlm_probability": 0.15,
        "whole_word_mask": False,
        "txt_unit": "line",  # what one row of a .txt file is: line | paragraph (a document) | file
        "next_sentence": False,  # true: BERT's next-sentence prediction on pairs of a document's lines
    }
    # The collator needs special_tokens_mask (and offset_mapping for whole words); it drops them itself.
    # Lines vary in length (Brown: 2 to 60+ tokens): batches of similar lengths waste little on padding.
    torch_compile_refusal = FAST_LOSS_COMPILE_REFUSAL
    training_defaults: ClassVar[dict[str, Any]] = {
        "learning_rate": 1e-4,
        "remove_unused_columns": False,
        "train_sampling_strategy": "group_by_length",
    }

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        if data["txt_unit"] not in TXT_UNITS:
            raise LlmkitError(
                f"data.txt_unit must be one of {', '.join(TXT_UNITS)}, got {data['txt_unit']!r}"
                f"{did_you_mean(str(data['txt_unit']), TXT_UNITS)}"
            )
        if data["next_sentence"]:
            # the combined loss is no language-model loss: compute_metrics reports the masked-LM perplexity
            self.reports_perplexity = False

    # -- data -------------------------------------------------------------------------------------
    def audit_columns(self) -> AuditColumns:
        """The text column (``data.text``); masked-LM rows have no labels."""
        return AuditColumns((self.data["text"],))

    def check_inputs(self, split: Split) -> None:
        require_columns(split, {"text": self.data["text"]})
        require_text(split, self.data["text"], "text")

    def check_data(self, splits: dict[str, Split]) -> None:
        super().check_data(splits)
        probability = self.data["mlm_probability"]
        if not 0 < probability < 1:
            raise LlmkitError(f"data.mlm_probability must be in (0, 1), got {probability}")
        if self.data["next_sentence"]:
            for role in ("train", "validation"):
                if role in splits:
                    next_sentence.check_documents(splits[role], self.data["text"], self.data["txt_unit"])

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        require_mask_token(tokenizer)
        if self.data["next_sentence"]:
            return self._encode_pairs(dataset, tokenizer)
        encoded = self._tokenized(dataset, tokenizer)
        if self.data["line_by_line"]:
            return encoded
        # one process, batches in order: each batch's tail opens the next batch's first block
        cutter = BlockCutter(self.data["max_length"])
        return encoded.map(cutter.cut, batched=True, batch_size=1000, keep_in_memory=True)

    def encode_chunks(
        self, chunks: Iterable[Dataset], tokenizer: PreTrainedTokenizerBase
    ) -> Iterator[Dataset]:
        """Blocks (``line_by_line: false``): each chunk's tail opens the next chunk's first block, so a stream
        gives the blocks of the corpus read whole; only the corpus's last partial block is left out."""
        if self.data["line_by_line"] or self.data["next_sentence"]:
            yield from super().encode_chunks(chunks, tokenizer)
            return
        from datasets import Dataset

        require_mask_token(tokenizer)
        tokenized = (self._tokenized(dataset, tokenizer).to_dict() for dataset in chunks)
        for blocks in cut_chunks(tokenized, self.data["max_length"]):
            yield Dataset.from_dict(blocks)

    def _tokenized(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        """Each row's tokens: each line's, truncated (``line_by_line``), or whole rows to cut into blocks."""
        column, max_length = self.data["text"], self.data["max_length"]
        offsets = bool(self.data["whole_word_mask"])

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            texts = batch[column]
            if self.data["line_by_line"]:  # a row may hold several lines (a document read by paragraph)
                texts = [line for text in texts for line in next_sentence.sentences(text)]
            return dict(
                tokenizer(
                    texts,
                    truncation=self.data["line_by_line"],
                    max_length=max_length if self.data["line_by_line"] else None,
                    return_special_tokens_mask=True,
                    return_offsets_mapping=offsets,
                )
            )

        return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, keep_in_memory=True)

    def _encode_pairs(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        """Sentence pairs of each document ([CLS] A [SEP] B [SEP], segments 0 and 1) and their NSP labels."""
        from datasets import Dataset

        pairs = next_sentence.sentence_pairs(dataset[self.data["text"]])
        encoded = tokenizer(
            pairs["first"],
            pairs["second"],
            truncation="longest_first",
            max_length=self.data["max_length"],
            return_special_tokens_mask=True,
            return_offsets_mapping=bool(self.data["whole_word_mask"]),
            return_token_type_ids=True,
        )
        return Dataset.from_dict({**encoded, next_sentence.LABEL: pairs[next_sentence.LABEL]})

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        from transformers import DataCollatorForLanguageModeling

        whole_words = self.data["whole_word_mask"]
        collate = DataCollatorForLanguageModeling(
            tokenizer,
            mlm_probability=self.data["mlm_probability"],
            whole_word_mask=whole_words,
            # whole-word masking always uses the mask token (no random replacement): say so, don't warn
            mask_replace_prob=1.0 if whole_words else 0.8,
            random_replace_prob=0.0 if whole_words else 0.1,
        )
        return OffsetPaddingCollator(collate, tokenizer.padding_side) if whole_words else collate

    # -- model ------------------------------------------------------------------------------------
    def check_model(self, model_path: Path) -> None:
        if self.data["next_sentence"]:
            check_next_sentence_family(model_type_of(model_path), str(model_path))

    def auto_class(self) -> type:
        from transformers import AutoModelForMaskedLM, BertForPreTraining

        return BertForPreTraining if self.data["next_sentence"] else AutoModelForMaskedLM

    def scratch_model_class(self, config: Any) -> type:
        if self.data["next_sentence"]:
            check_next_sentence_family(config.model_type, "model.from_scratch")
        return self.auto_class()

    def load_model(self, path: Path, **load_options: Any) -> PreTrainedModel:
        """Load with an MLM head (and an NSP head for next_sentence); new heads are announced once."""
        model, info = from_pretrained(self.auto_class(), path, output_loading_info=True, **load_options)
        missing = info["missing_keys"]
        if missing and any(not key.startswith(NEXT_SENTENCE_HEAD) for key in missing):
            model.tie_weights()
            tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
            log(
                f"warning: {path} has no masked-LM head; a new one was initialised"
                f"{' (decoder tied to the input embeddings)' if tied else ''}. Its guesses are noise until "
                f"a fill-mask recipe trains it."
            )
        if any(key.startswith(NEXT_SENTENCE_HEAD) for key in missing):
            log(f"warning: {path} has no next-sentence head; a new one was initialised (data.next_sentence)")
        return model

    def adapter_modules_to_save(self, model: PreTrainedModel) -> list[str]:
        """The MLM head's own layers (BERT's ``cls.predictions.transform``), new on a bare encoder; not its
        decoder, which is the input embedding matrix (tied) and would make the adapter a copy of it."""
        head = mlm_head(model)
        if head is None:
            return []
        names = {module: name for name, module in model.named_modules()}
        embeddings = model.get_output_embeddings()
        trained = []
        for module in head.modules():  # outermost first: a kept module's parts are not listed again
            holds_embeddings = any(sub is embeddings for sub in module.modules())
            inside_kept = any(names[module].startswith(f"{kept}.") for kept in trained)
            if module is not head and not holds_embeddings and not inside_kept and has_parameters(module):
                trained.append(names[module])
        return trained

    def trainer_class(self) -> type:
        return masked_positions_trainer()

    def distillation_loss(self) -> str:
        if self.data["next_sentence"]:
            raise LlmkitError(
                "distill: fill-mask learns from a teacher's masked-token predictions, and data.next_sentence "
                "adds a second head and loss; remove data.next_sentence or the distill section"
            )
        return "kl"  # each masked token's softened vocabulary distribution

    def loss_targets(self) -> tuple[str, ...]:
        # next-sentence pre-training: masked tokens for the masked-LM term, pairs for the next-sentence term
        return ("labels", next_sentence.LABEL) if self.data["next_sentence"] else ("labels",)

    # -- evaluation ---------------------------------------------------------------------------------
    def compute_metrics(self):
        from llmkit.metrics import load_metrics

        accuracy = load_metrics("accuracy")
        if self.data["next_sentence"]:
            return lambda prediction: next_sentence.pretraining_metrics(
                prediction.predictions, prediction.label_ids
            )

        def compute(eval_prediction) -> dict[str, float]:
            predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
            masked = labels != -100
            score = accuracy.compute(predictions=predictions[masked], references=labels[masked])
            return {"masked_accuracy": score["accuracy"]}

        return compute

    def preprocess_logits_for_metrics(self):
        return next_sentence.pretraining_logits if self.data["next_sentence"] else predicted_tokens

    def describe_example(self, batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        lines = super().describe_example(batch, tokenizer)
        if next_sentence.LABEL in batch:
            random = int(batch[next_sentence.LABEL][0]) == next_sentence.IS_RANDOM
            lines.append(
                f"next sentence: {'random (from another document)' if random else 'continues the first'}"
            )
        return lines

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        texts = [row[self.data["text"]] for row in rows]
        return [{"masks": masks} for masks in fill_masks(model, tokenizer, texts)]

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        """Hide one word of each text (its longest) and show the model's top guesses for it."""
        posed = [mask_longest_word(row[self.data["text"]], tokenizer.mask_token) for row in rows]
        posed = [(text, word) for text, word in posed if word]
        if not posed:
            return []
        answers = fill_masks(model, tokenizer, [text for text, _ in posed], top_k=3)
        return [
            {
                "input": text,
                "prediction": ", ".join(f"{c['token']} ({c['score']:.2f})" for c in masks[0]),
                "reference": word,
            }
            for (text, word), masks in zip(posed, answers, strict=True)
        ]


#: The weights of BERT's next-sentence head (``BertForPreTraining``; new on a checkpoint without one).
NEXT_SENTENCE_HEAD = ("cls.seq_relationship", "bert.pooler")


def model_type_of(model_path: Path) -> str | None:
    """The ``model_type`` in a folder's config.json (an adapter folder's base decides; None then)."""
    import json

    try:
        return json.loads((model_path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def check_next_sentence_family(model_type: str | None, where: str) -> None:
    """Next-sentence prediction is BERT's objective (``BertForPreTraining``); other families have no head."""
    if model_type is not None and model_type != "bert":
        raise LlmkitError(
            f"{where}: data.next_sentence trains BERT's next-sentence head (BertForPreTraining), and this "
            f"model is a {model_type}; use a BERT model (model.from_scratch: bert-mini) or "
            f"data.next_sentence=false"
        )


def mask_longest_word(text: str, mask_token: str, max_words: int = 40) -> tuple[str, str]:
    """(text with its longest word among the first ``max_words`` masked, that word); ('', '') if none."""
    words = text.split()[:max_words]
    candidates = [w for w in words if w.isalpha()]
    if not candidates:
        return "", ""
    word = max(candidates, key=len)
    index = words.index(word)
    return " ".join([*words[:index], mask_token, *words[index + 1 :]]), word


def normalise_masks(text: str, mask_token: str) -> str:
    """Turn [MASK], <mask> (any case) into the model's own mask token."""
    return MASK_PLACEHOLDER.sub(lambda _: mask_token, text)


def with_model_masks(texts: list[str], tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Normalise placeholders; a text without any mask is a user error (checked before the model loads)."""
    mask_token = tokenizer.mask_token
    normalised = [normalise_masks(text, mask_token) for text in texts]
    for number, text in enumerate(normalised, start=1):
        if mask_token not in text:
            raise LlmkitError(
                f"text {number} has no mask: {texts[number - 1][:60]!r}; write [MASK] (or <mask>) "
                f"where a word should be filled in"
            )
    return normalised


def untrained_head_error(name: str, kind: str, missing: list[str]) -> LlmkitError:
    """The one line for a model whose head would start at random (its guesses would be noise)."""
    return LlmkitError(
        f"model {name} has no trained {kind} head ({missing[0]}"
        f"{f' and {len(missing) - 1} more weights' if len(missing) > 1 else ''} would start at random), so "
        f"its guesses would be noise; train one with `llmkit finetune recipes/fill-mask-brown.yaml "
        f"model={name}`, or fill masks with a pretrained causal LM: --model smollm2-135m"
    )


def load_trained_mlm(path: Path, name: str, **load_options: Any) -> PreTrainedModel:
    """Load a masked LM to fill masks with; a head that was never trained is refused, not shown.

    A base encoder (minilm-l6, tiny-bert) gets a fresh head from transformers, fine to train but not to
    answer with. Training loads through :meth:`FillMaskTask.load_model`, which accepts one.
    """
    from transformers import AutoModelForMaskedLM

    from llmkit.core.devices import inference_device

    try:
        with quiet_library_progress(errors_only=True):
            model, info = from_pretrained(
                AutoModelForMaskedLM, path, output_loading_info=True, **load_options
            )
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(f"model folder {path}: cannot load it as a masked LM ({first_line})") from None
    if info["missing_keys"]:
        raise untrained_head_error(name, "masked-LM", sorted(info["missing_keys"]))
    return model.to(inference_device()).eval()


def fill_masks(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], top_k: int = 5
) -> list[list[list[dict[str, Any]]]]:
    """For each text, for each mask in it (left to right): the top-k tokens with probabilities."""
    import torch

    normalised = with_model_masks(texts, tokenizer)
    model.eval()
    results: list[list[list[dict[str, Any]]]] = []
    for start in range(0, len(normalised), PREDICT_BATCH_SIZE):
        batch = normalised[start : start + PREDICT_BATCH_SIZE]
        encoded = tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(model.device)
        with torch.no_grad():
            outputs = model(**encoded)
        # a masked LM's logits; BertForPreTraining (trained with next_sentence) calls them prediction_logits
        logits = outputs.logits if hasattr(outputs, "logits") else outputs.prediction_logits
        for row, input_ids in enumerate(encoded["input_ids"]):
            positions = (input_ids == tokenizer.mask_token_id).nonzero().flatten().tolist()
            if not positions:
                raise LlmkitError(
                    f"text {start + row + 1}: its mask was cut off at the model's maximum length "
                    f"({tokenizer.model_max_length} tokens); shorten the text"
                )
            masks = []
            for position in positions:
                probabilities = logits[row, position].float().softmax(dim=-1)
                scores, ids = probabilities.topk(top_k)
                masks.append(
                    [
                        {"token": tokenizer.decode([token_id]).strip(), "token_id": token_id, "score": score}
                        for score, token_id in zip(scores.tolist(), ids.tolist(), strict=True)
                    ]
                )
            results.append(masks)
    return results


class OffsetPaddingCollator:
    """Pads ``offset_mapping`` (which ``tokenizer.pad`` leaves ragged) before whole-word masking."""

    def __init__(self, collate: Any, padding_side: str) -> None:
        self.collate = collate
        self.padding_side = padding_side

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(len(feature["input_ids"]) for feature in features)
        padded = []
        for feature in features:
            filler = [[0, 0]] * (longest - len(feature["offset_mapping"]))
            offsets = [list(pair) for pair in feature["offset_mapping"]]
            offsets = filler + offsets if self.padding_side == "left" else offsets + filler
            padded.append({**feature, "offset_mapping": offsets})
        return self.collate(padded)


def mlm_head(model: Any) -> Any | None:
    """The module mapping hidden states to vocabulary logits (BERT's ``cls``, RoBERTa's ``lm_head``).

    None when the model is wrapped (DDP) or its head is split over several modules (DistilBERT):
    then training takes the ordinary full-sequence path.
    """
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return None
    heads = [
        child for child in model.children() if child is not base and any(True for _ in child.parameters())
    ]
    return heads[0] if len(heads) == 1 else None


def predicted_tokens(logits: Any, labels: Any) -> Any:
    """``preprocess_logits_for_metrics``: token ids, from logits (the stock evaluation) or as they come (the
    masked-positions evaluation has picked them already, -100 where nothing is masked)."""
    first = logits[0] if isinstance(logits, tuple) else logits
    return first if not first.is_floating_point() else argmax_logits(logits, labels)


def masked_positions_trainer() -> type:
    """A Trainer whose training loss and evaluation compute vocabulary logits only at the masked positions.

    The MLM head of a small encoder costs about as much as the encoder itself (MiniLM: 384 x 30,522 per
    token; a from-scratch bert-mini 256 x 16,000), yet only ~15 % of the positions carry a label. The loss is
    the stock one; evaluation returns the predicted token at each masked position (-100 elsewhere) instead
    of every position's logits (so does ``Trainer.predict`` on labelled rows). Next-sentence runs keep the
    stock path.
    """
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    from llmkit.core.devices import shards_parameters

    class MaskedPositionsTrainer(Trainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.data_collator = ContentSeededMasks(self.data_collator, self.args.seed)

        # Losses are micro-batch means: llmkit.training.loss_scaling weighs them over an accumulated step.
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inner = inner_model(model)  # a LoRA-wrapped model's transformers modules (adapters inside)
            head = None if shards_parameters(self) else mlm_head(inner)
            if return_outputs or not model.training or head is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if next_sentence.LABEL in inputs:  # BertForPreTraining: masked LM + next-sentence prediction
                return sum(next_sentence.pretraining_loss_terms(inner, inputs).values())
            return self.loss_and_item_logits(model, inputs)[0]

        def loss_and_item_logits(self, model, inputs, hard_loss: bool = True):
            """(the masked-LM loss, the vocabulary logits at the masked positions) by the fast path: what a
            distilling trainer (llmkit.training.distillation) compares with its teacher's, which it passes
            here too with ``hard_loss=False`` (the loss is then None). None where the fast path does not
            apply (a sharded model, no single head)."""
            inner = inner_model(model)
            head = None if shards_parameters(self) else mlm_head(inner)
            if head is None or next_sentence.LABEL in inputs:
                return None
            labels = inputs["labels"]
            hidden = inner.base_model(**{k: v for k, v in inputs.items() if k != "labels"})[0]
            selected = labels != -100
            logits = head(hidden[selected])
            if not hard_loss:
                return None, logits
            loss = F.cross_entropy(logits.float(), labels[selected], reduction="sum")
            return loss / selected.sum().clamp(min=1), logits

        def loss_terms(self, model, inputs):
            """Next-sentence pre-training's two means, over masked tokens and over pairs; None: one mean."""
            if next_sentence.LABEL not in inputs:
                return None
            inner = inner_model(model)
            if not shards_parameters(self) and mlm_head(inner) is not None:
                return next_sentence.pretraining_loss_terms(inner, inputs)
            # the model as wrapped (DDP, sharded): its own forward, every position's logits
            targets = ("labels", next_sentence.LABEL)
            outputs = model(**{key: value for key, value in inputs.items() if key not in targets})
            return next_sentence.loss_terms_of(
                outputs.prediction_logits, outputs.seq_relationship_logits, inputs
            )

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inner = inner_model(model)
            head = None if shards_parameters(self) else mlm_head(inner)
            if head is None or "labels" not in inputs or next_sentence.LABEL in inputs:
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            inputs = self._prepare_inputs(inputs)
            labels = inputs["labels"]
            with torch.no_grad(), self.compute_loss_context_manager():
                hidden = inner.base_model(**{k: v for k, v in inputs.items() if k != "labels"})[0]
                selected = labels != -100
                logits = head(hidden[selected]).float()
                loss = F.cross_entropy(logits, labels[selected])  # the mean over masked tokens, as stock
            if prediction_loss_only:
                return loss.detach(), None, None
            predicted = torch.full_like(labels, -100)
            predicted[selected] = logits.argmax(dim=-1)
            return loss.detach(), predicted, labels

    return MaskedPositionsTrainer


class ContentSeededMasks:
    """Masks drawn from a generator seeded by ``training.seed`` and the batch's tokens, not the global RNG.

    A batch is then masked the same way whenever it is collated: a resumed run (whose skipped batches are
    collated before the checkpoint's RNG state is back) masks as the uninterrupted run did, every evaluation
    masks the same tokens (successive scores compare, and `llmkit evaluate` gives a run's scores back), and
    training still sees fresh masks for an example that an epoch's shuffle puts in another batch.
    """

    def __init__(self, collate: Any, seed: int) -> None:
        from transformers import DataCollatorForLanguageModeling

        self.collate = collate
        self.seed = seed
        masking = collate.collate if isinstance(collate, OffsetPaddingCollator) else collate
        self.masking = masking if isinstance(masking, DataCollatorForLanguageModeling) else None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if self.masking is not None:
            import hashlib

            import numpy as np
            import torch

            digest = hashlib.blake2b(str(self.seed).encode(), digest_size=8)
            for feature in features:
                digest.update(np.asarray(feature["input_ids"], dtype=np.int64).tobytes() + b"|")
            seed = int.from_bytes(digest.digest(), "little") & (2**63 - 1)
            self.masking.generator = torch.Generator().manual_seed(seed)
        return self.collate(features)


def has_parameters(module: Any) -> bool:
    return next(module.parameters(), None) is not None
