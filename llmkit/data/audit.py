"""The data checks of `llmkit audit`, on rows already read: duplicates, leakage, contradictions, labels,
lengths, broken encodings and near duplicates.

Everything here works on plain lists (one normalised key per row, its label, its length), so the checks are
the same for every task and a plain-Python count can check them. Rows are compared by their normalised text
(Unicode NFKC, case-folded, runs of whitespace as one space); a pair task's key is its texts joined by a tab.
Near duplicates are MinHash signatures of byte 5-grams with LSH banding, in NumPy (no extra package): a
million short rows take seconds, not the hours of comparing every pair.

The recipe's fixes (``data.deduplicate``, ``data.drop_leaks``: ``drop_training_rows``) use the same keys and
the same near-duplicate groups, so a fixed training split is what the audit would call clean.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log
from llmkit.data.files import Split, column_values

#: Examples kept per finding (the counts are always complete).
EXAMPLES = 5
#: A class with fewer rows than this in a split is "rare".
RARE_CLASS_ROWS = 10
#: Texts shorter than this many length units (tokens or words) are "very short".
SHORT_UNITS = 3
#: U+FFFD (a byte that was not valid UTF-8) and the usual UTF-8-read-as-Latin-1/cp1252 pairs ("Ã©", "â€™").
BROKEN_ENCODING = re.compile("\ufffd|[\u00c2\u00c3][\u0080-\u00bf]|\u00e2\u20ac|\u00c3\u0192|\u00c2\u00a0")
WHITESPACE = re.compile(r"\s+")

# -- near duplicates: MinHash over byte 5-grams, LSH bands -------------------------------------------------
SHINGLE_BYTES = 5
PERMUTATIONS = 64
BANDS = 16  # 16 bands of 4 values: a pair at Jaccard 0.7 becomes a candidate with probability 0.99
NEAR_THRESHOLD = 0.7  # estimated Jaccard similarity (share of equal MinHash values) that counts as "near"
CHUNK_ROWS = 50_000  # texts hashed together: bounds the memory of the 5-gram arrays
VERIFY_PAIRS = 100_000  # candidate pairs whose signatures are compared at once


def normalise(text: str) -> str:
    """The form rows are compared in: NFKC (full-width, ligatures), case-folded, whitespace collapsed."""
    return WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def row_key(texts: Sequence[Any]) -> str:
    """One row's key: its normalised text, or a pair's normalised texts joined by a tab."""
    return "\t".join(normalise(as_text(value)) for value in texts)


def row_keys(cells: Sequence[Sequence[Any]]) -> list[str]:
    """Each row's key from its columns' cells (``cells[column][row]``)."""
    count = len(cells[0]) if cells else 0
    return [row_key([cell[i] for cell in cells]) for i in range(count)]


def as_text(value: Any) -> str:
    """A cell as text: a token list (NER) is joined by spaces, a missing value is empty."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(as_text(item) for item in value)
    return str(value)


def label_key(value: Any) -> Any:
    """A label as a hashable value: a label set (multi-label) is a sorted tuple, a tag list a tuple."""
    if isinstance(value, list | tuple):
        return tuple(label_key(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass
class AuditRows:
    """One split as the audit sees it: each row's key, shown text, label and length, and where it is."""

    role: str
    keys: list[str]
    texts: list[str]
    labels: list[Any] | None  # None: the task has no labels to compare
    lengths: list[int]
    where: Callable[[int], str]
    #: Each row's label classes, for the distribution (a multi-label row counts once per label).
    classes: list[list[Any]] | None = None

    def example(self, index: int, limit: int = 160) -> dict[str, Any]:
        text = self.texts[index]
        shown = text if len(text) <= limit else text[: limit - 1] + "…"
        item: dict[str, Any] = {"where": self.where(index), "text": shown}
        if self.labels is not None:
            item["label"] = _shown_label(self.labels[index])
        return item


def _shown_label(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# -- exact duplicates, leakage, contradictions --------------------------------------------------------------
def duplicate_groups(rows: AuditRows) -> dict[str, list[int]]:
    """Keys that more than one row of the split has -> those rows (empty texts are left out)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(rows.keys):
        if key.strip():
            groups[key].append(index)
    return {key: indices for key, indices in groups.items() if len(indices) > 1}


def exact_duplicates(rows: AuditRows) -> dict[str, Any]:
    """Rows whose normalised text an earlier row of the same split already has."""
    groups = duplicate_groups(rows)
    extra = sum(len(indices) - 1 for indices in groups.values())
    largest = sorted(groups.values(), key=len, reverse=True)[:EXAMPLES]
    return {
        "rows": len(rows.keys),
        "duplicate_rows": extra,  # rows beyond the first of each text
        "duplicated_texts": len(groups),
        "share": _share(extra, len(rows.keys)),
        "examples": [_group(rows, indices) for indices in largest],
    }


def cross_split_copies(train: AuditRows, other: AuditRows) -> dict[str, Any]:
    """Training rows whose normalised text is also a row of ``other`` (validation/test): leakage."""
    where_other: dict[str, int] = {}
    for index, key in enumerate(other.keys):
        if key.strip():
            where_other.setdefault(key, index)
    copied = [index for index, key in enumerate(train.keys) if key in where_other]
    texts = {train.keys[index] for index in copied}
    other_rows = sum(1 for key in other.keys if key in texts)
    examples = []
    for index in copied[:EXAMPLES]:
        examples.append(
            {"train": train.example(index), other.role: other.example(where_other[train.keys[index]])}
        )
    return {
        "train_rows": len(copied),
        f"{other.role}_rows": other_rows,
        "texts": len(texts),
        f"{other.role}_share": _share(other_rows, len(other.keys)),
        "examples": examples,
    }


def contradictions(splits: Sequence[AuditRows]) -> dict[str, Any]:
    """Texts that carry different labels: within each split, and across the splits taken together."""
    labelled = [rows for rows in splits if rows.labels is not None]
    result: dict[str, Any] = {}
    for rows in labelled:
        result[rows.role] = _contradicting([rows])
    if len(labelled) > 1:
        result["across_splits"] = _contradicting(labelled, across=True)
    return result


def _contradicting(splits: Sequence[AuditRows], across: bool = False) -> dict[str, Any]:
    seen: dict[str, list[tuple[AuditRows, int]]] = defaultdict(list)
    for rows in splits:
        for index, key in enumerate(rows.keys):
            if key.strip():
                seen[key].append((rows, index))
    found = []
    for places in seen.values():
        labels = {label_key(rows.labels[index]) for rows, index in places}  # type: ignore[index]
        if len(labels) < 2:
            continue
        if across and len({rows.role for rows, _ in places}) < 2:
            continue  # a split's own contradictions are counted under that split
        found.append(places)
    rows_involved = sum(len(places) for places in found)
    return {
        "texts": len(found),
        "rows": rows_involved,
        "examples": [
            [{"split": rows.role, **rows.example(index)} for rows, index in places[:EXAMPLES]]
            for places in found[:EXAMPLES]
        ],
    }


# -- labels, lengths, encodings ----------------------------------------------------------------------------
def label_distribution(rows: AuditRows, rare_rows: int = RARE_CLASS_ROWS) -> dict[str, Any] | None:
    """Rows per class (most first), the rare classes and the imbalance ratio (largest / smallest)."""
    if rows.classes is None:
        return None
    counts = Counter(label for labels in rows.classes for label in labels)
    if not counts:
        return None
    ordered = dict(sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))))
    values = list(ordered.values())
    return {
        "counts": {str(label): count for label, count in ordered.items()},
        "classes": len(ordered),
        "rare": [str(label) for label, count in ordered.items() if count < rare_rows],
        "imbalance_ratio": round(values[0] / values[-1], 2),
    }


def length_report(
    rows: AuditRows, unit: str, max_length: int | None, short: int = SHORT_UNITS
) -> dict[str, Any]:
    """Empty, very short and very long texts; with token lengths, the share ``max_length`` cuts."""
    import numpy as np

    lengths = np.asarray(rows.lengths, dtype=np.int64)
    empty = [i for i, key in enumerate(rows.keys) if not key.replace("\t", "").strip()]
    result: dict[str, Any] = {
        "unit": unit,
        "empty": len(empty),
        "empty_examples": [rows.where(i) for i in empty[:EXAMPLES]],
    }
    if not len(lengths):
        return result
    p99 = round(float(np.percentile(lengths, 99)), 1)
    short_rows = [i for i in np.flatnonzero((lengths < short) & (lengths > 0))]
    long_rows = np.flatnonzero(lengths > max(p99, 1.0))
    result.update(
        {
            "mean": round(float(lengths.mean()), 1),
            "median": float(np.median(lengths)),
            "p99": p99,
            "max": int(lengths.max()),
            "short_below": short,
            "very_short": len(short_rows),
            "very_short_examples": [rows.example(int(i)) for i in short_rows[:EXAMPLES]],
            "very_long": len(long_rows),  # above the 99th percentile
            "very_long_examples": [
                rows.where(int(i)) + f" ({int(lengths[i])} {unit})"
                for i in long_rows[np.argsort(-lengths[long_rows])][:EXAMPLES]
            ],
        }
    )
    if max_length and unit == "tokens":
        cut = int((lengths > max_length).sum())
        result["max_length"] = max_length
        result["truncated"] = cut
        result["truncated_share"] = _share(cut, len(lengths))
    return result


def broken_encodings(rows: AuditRows) -> dict[str, Any]:
    """Rows with U+FFFD or mojibake (UTF-8 bytes read as Latin-1/cp1252: "Ã©", "â€™")."""
    found = [i for i, text in enumerate(rows.texts) if BROKEN_ENCODING.search(text)]
    return {"rows": len(found), "examples": [rows.example(i) for i in found[:EXAMPLES]]}


# -- near duplicates ---------------------------------------------------------------------------------------
@dataclass
class NearDuplicates:
    """Groups of different (not exactly equal) texts whose MinHash estimate of Jaccard similarity on byte
    5-grams reaches the threshold; each member is (split index, row index)."""

    groups: list[list[tuple[int, int]]] = field(default_factory=list)
    threshold: float = NEAR_THRESHOLD


def minhash_signatures(texts: Sequence[str], permutations: int = PERMUTATIONS, seed: int = 0) -> Any:
    """(len(texts), permutations) MinHash values of each text's byte 5-grams, as uint32 (the top 32 bits:
    half the memory); a text shorter than 5 bytes is padded to one gram. Vectorised: the texts of a chunk
    are one byte array."""
    import numpy as np

    rng = np.random.default_rng(seed)
    multipliers = rng.integers(1, 2**63, size=permutations, dtype=np.uint64) | np.uint64(1)
    offsets = rng.integers(0, 2**63, size=permutations, dtype=np.uint64)
    signatures = np.empty((len(texts), permutations), dtype=np.uint32)
    for start in range(0, len(texts), CHUNK_ROWS):
        chunk = texts[start : start + CHUNK_ROWS]
        signatures[start : start + len(chunk)] = _chunk_signatures(chunk, multipliers, offsets)
    return signatures


def _chunk_signatures(texts: Sequence[str], multipliers: Any, offsets: Any) -> Any:
    import numpy as np

    encoded = [text.encode("utf-8") or b" " for text in texts]
    # a text shorter than a gram is padded to one gram, so every text has at least one
    encoded = [
        data + b"\0" * (SHINGLE_BYTES - len(data)) if len(data) < SHINGLE_BYTES else data for data in encoded
    ]
    lengths = np.fromiter((len(data) for data in encoded), dtype=np.int64, count=len(encoded))
    buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    grams = lengths - SHINGLE_BYTES + 1  # grams per text, each within its text
    # the gram starting at each position p: bytes p..p+4 packed into one 40-bit integer
    packed = np.zeros(len(buffer) - SHINGLE_BYTES + 1, dtype=np.uint64)
    for shift in range(SHINGLE_BYTES):
        packed |= buffer[shift : shift + len(packed)] << np.uint64(8 * shift)
    positions = np.repeat(starts - np.concatenate(([0], np.cumsum(grams)[:-1])), grams) + np.arange(
        grams.sum()
    )
    values = packed[positions]
    first = np.concatenate(([0], np.cumsum(grams)[:-1]))
    result = np.empty((len(texts), len(multipliers)), dtype=np.uint32)
    for column, (multiplier, offset) in enumerate(zip(multipliers, offsets, strict=True)):
        hashed = values * multiplier + offset  # wraps modulo 2**64: a multiply-add universal hash
        hashed ^= hashed >> np.uint64(29)
        result[:, column] = np.minimum.reduceat(hashed, first) >> np.uint64(32)
    return result


def near_duplicate_pairs(signatures: Any, threshold: float = NEAR_THRESHOLD, bands: int = BANDS) -> Any:
    """(n, 2) index pairs whose signatures agree on at least ``threshold`` of their values, found by LSH:
    texts that share one whole band of the signature are candidates, each checked against the first text of
    its bucket (so a bucket of m texts costs m comparisons, not m²)."""
    import numpy as np

    count, width = signatures.shape
    rows_per_band = width // bands
    found = []
    for band in range(bands):
        part = signatures[:, band * rows_per_band : (band + 1) * rows_per_band]
        bucket = np.zeros(count, dtype=np.uint64)
        for column in range(part.shape[1]):
            bucket = (bucket * np.uint64(0x9E3779B97F4A7C15)) ^ part[:, column].astype(np.uint64)
        order = np.argsort(bucket, kind="stable")
        ordered = bucket[order]
        new_bucket = np.concatenate(([True], ordered[1:] != ordered[:-1]))
        heads = order[np.flatnonzero(new_bucket)][np.cumsum(new_bucket) - 1]  # each text's bucket head
        members = heads != order
        first, second = heads[members], order[members]
        if not len(first):
            continue
        for start in range(0, len(first), VERIFY_PAIRS):  # in slices: two copies of every signature is a lot
            left, right = first[start : start + VERIFY_PAIRS], second[start : start + VERIFY_PAIRS]
            keep = (signatures[left] == signatures[right]).mean(axis=1) >= threshold
            found.append(np.stack([left[keep], right[keep]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0)


def near_duplicates(splits: Sequence[AuditRows], threshold: float = NEAR_THRESHOLD) -> NearDuplicates:
    """Near-duplicate groups over every split at once (``near_groups`` of the splits' keys)."""
    return NearDuplicates(near_groups([rows.keys for rows in splits], threshold), threshold)


def near_groups(
    key_lists: Sequence[Sequence[str]], threshold: float = NEAR_THRESHOLD
) -> list[list[tuple[int, int]]]:
    """Groups of (list index, row index), rows in order: the distinct non-empty keys are hashed once each,
    and a group holds the rows of two or more distinct keys that LSH links (directly or through others)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    key_ids: dict[str, int] = {}
    for keys in key_lists:
        for key in keys:
            if key.strip():
                key_ids.setdefault(key, len(key_ids))
    if len(key_ids) < 2:
        return []
    pairs = near_duplicate_pairs(minhash_signatures(list(key_ids)), threshold)
    if not len(pairs):
        return []
    size = len(key_ids)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    group_of = {int(key): int(component[key]) for key in np.unique(pairs)}
    groups: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for list_index, keys in enumerate(key_lists):
        for index, key in enumerate(keys):
            group = group_of.get(key_ids.get(key, -1))
            if group is not None:
                groups[group].append((list_index, index))
    return list(groups.values())


def near_duplicate_report(splits: Sequence[AuditRows], near: NearDuplicates) -> dict[str, Any]:
    """Per split: rows in a near-duplicate group with another row of the split; across: training rows near
    an evaluation row (exact copies are the exact checks' findings, not counted here)."""
    within: dict[str, Any] = {}
    for split_index, rows in enumerate(splits):
        groups = [[i for s, i in group if s == split_index] for group in near.groups]
        groups = [g for g in groups if len({rows.keys[i] for i in g}) > 1]
        within[rows.role] = {
            "groups": len(groups),
            "rows": sum(len(g) for g in groups),
            "examples": [[rows.example(i) for i in g[:EXAMPLES]] for g in groups[:EXAMPLES]],
        }
    result: dict[str, Any] = {"threshold": near.threshold, "method": _method(), "within": within}
    train = next((i for i, rows in enumerate(splits) if rows.role == "train"), None)
    if train is not None:
        across: dict[str, Any] = {}
        for split_index, rows in enumerate(splits):
            if split_index == train:
                continue
            pairs = []
            for group in near.groups:
                mine = [i for s, i in group if s == train]
                theirs = [i for s, i in group if s == split_index]
                near_rows = [i for i in mine if any(splits[train].keys[i] != rows.keys[j] for j in theirs)]
                if near_rows and theirs:
                    pairs.append((near_rows, theirs))
            across[rows.role] = {
                "train_rows": sum(len(mine) for mine, _ in pairs),
                f"{rows.role}_rows": sum(len(theirs) for _, theirs in pairs),
                "examples": [
                    {"train": splits[train].example(mine[0]), rows.role: rows.example(theirs[0])}
                    for mine, theirs in pairs[:EXAMPLES]
                ],
            }
        result["across_splits"] = across
    return result


def _method() -> str:
    return (
        f"MinHash ({PERMUTATIONS} hashes of byte {SHINGLE_BYTES}-grams of the normalised text), LSH "
        f"{BANDS} bands of {PERMUTATIONS // BANDS}"
    )


# -- fixes: data.deduplicate, data.drop_leaks -------------------------------------------------------------
DEDUPLICATE_MODES = ("exact", "near")


def drop_training_rows(
    splits: dict[str, Split], data: dict[str, Any], text_columns: Sequence[str] | None, task: str
) -> dict[str, int]:
    """Apply ``data.deduplicate`` (keep the first row of each text, or of each near-duplicate group) and
    ``data.drop_leaks`` (drop training rows whose text is a validation or test row) to the training split,
    in place; log and return how many rows each removed (for metrics.json). Rows are compared as the audit
    compares them: the normalised text of ``text_columns``."""
    mode, leaks = data.get("deduplicate"), data.get("drop_leaks")
    if not mode and not leaks:
        return {}
    setting = "data.deduplicate" if mode else "data.drop_leaks"
    if text_columns is None:
        raise LlmkitError(
            f"{setting} does not work for task {task}, which has no texts to compare; remove {setting}"
        )
    train = splits["train"]
    keys = split_keys(train, text_columns)
    removed: dict[str, int] = {}
    dropped: set[int] = set()
    if mode:
        dropped.update(repeated_rows(keys, near=mode == "near"))
        removed["train_duplicates_removed"] = len(dropped)
        log(f"data.deduplicate {mode}: removed {len(dropped)} of {len(keys)} training rows (repeats)")
    if leaks:
        others = [split_keys(split, text_columns) for role, split in splits.items() if role != "train"]
        leaked = set(leaked_rows(keys, others)) - dropped
        dropped |= leaked
        removed["train_leaks_removed"] = len(leaked)
        evaluation = " or ".join(role for role in splits if role != "train") or "evaluation"
        log(f"data.drop_leaks: removed {len(leaked)} training rows that copy a {evaluation} row")
    if dropped:
        train.keep_rows([i for i in range(len(keys)) if i not in dropped])
    return removed


def split_keys(split: Split, text_columns: Sequence[str]) -> list[str]:
    """Each row's key from the text columns the split has."""
    present = [column for column in text_columns if column in split.dataset.column_names]
    return row_keys([column_values(split.dataset, column) for column in present])


def repeated_rows(keys: Sequence[str], near: bool = False) -> list[int]:
    """Rows to drop so that each text is kept once (its first row); with ``near``, also each near-duplicate
    group (``near_groups``) keeps only its first row. Empty texts are never dropped."""
    seen: set[str] = set()
    dropped: set[int] = set()
    for index, key in enumerate(keys):
        if key.strip():
            if key in seen:
                dropped.add(index)
            seen.add(key)
    if near:
        for group in near_groups([keys]):
            dropped.update(index for _, index in group[1:])
    return sorted(dropped)


def leaked_rows(train_keys: Sequence[str], other_keys: Sequence[Sequence[str]]) -> list[int]:
    """Training rows whose (non-empty) key is a row of one of the other splits."""
    elsewhere = {key for keys in other_keys for key in keys if key.strip()}
    return [index for index, key in enumerate(train_keys) if key in elsewhere]


# -- helpers -----------------------------------------------------------------------------------------------
def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _group(rows: AuditRows, indices: list[int]) -> dict[str, Any]:
    return {
        "copies": len(indices),
        **rows.example(indices[0]),
        "rows": [rows.where(i) for i in indices[:EXAMPLES]],
    }
