"""Counterfactual texts for the bias probe of `llmkit audit`: identity terms (given names by gender,
pronouns, nationalities, religions) swapped in a text, from an editable term list shipped with llmkit
(``identity_terms.yaml`` beside this module) or the user's own file.

A model whose prediction changes when only "he" becomes "she", or "Christian" becomes "Muslim", treats the
groups differently; the probe (``llmkit.inference.bias``) counts how often that happens per group. The same
counterfactuals, made from the training rows and given their rows' labels, are the fix
(``data.augment: counterfactual``, classification): counterfactual data augmentation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError

TERMS_FILE = Path(__file__).with_name("identity_terms.yaml")
KINDS = ("swap", "replace")


@dataclass(frozen=True)
class TermGroup:
    """One group of identity terms: pairs to swap both ways, or a set whose terms replace each other."""

    name: str
    kind: str  # "swap" or "replace"
    terms: tuple[tuple[str, ...], ...]  # swap: the pairs; replace: one tuple, the set

    def pattern(self) -> re.Pattern[str]:
        words = sorted({term for group in self.terms for term in group}, key=len, reverse=True)
        return re.compile(r"\b(" + "|".join(re.escape(word) for word in words) + r")\b", re.IGNORECASE)


def load_terms(path: str | Path | None = None, key: str = "--bias-terms") -> list[TermGroup]:
    """The shipped groups, plus the groups of ``path`` (same format; one of a shipped name replaces it);
    ``key`` names the setting that gave the path, in errors."""
    groups = {group.name: group for group in _read_groups(TERMS_FILE, key)}
    if path is not None:
        groups.update({group.name: group for group in _read_groups(Path(path), key)})
    return list(groups.values())


def _read_groups(path: Path, key: str) -> list[TermGroup]:
    import yaml

    if not path.is_file():
        raise LlmkitError(f"{key} {path}: no such file; give a YAML file of term groups")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise LlmkitError(f"{key} {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise LlmkitError(f"{key} {path}: give a mapping of group names to {{swap: ...}} or {{replace: ...}}")
    return [_group(path, str(name), value, key) for name, value in raw.items()]


def _group(path: Path, name: str, value: Any, key: str) -> TermGroup:
    example = "swap: [[he, she], [him, her]] or replace: [Christian, Muslim, Jewish]"
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in KINDS:
        raise LlmkitError(f"{key} {path}: group '{name}' must be one key, e.g. {example}")
    kind, terms = next(iter(value.items()))
    if kind == "swap":
        pairs = terms if isinstance(terms, list) else []
        if not pairs or not all(
            isinstance(p, list) and len(p) == 2 and all(_word(t) for t in p) for p in pairs
        ):
            raise LlmkitError(f"{key} {path}: group '{name}': swap takes pairs of words, e.g. {example}")
        return TermGroup(name, kind, tuple((str(a), str(b)) for a, b in pairs))
    if not isinstance(terms, list) or len(terms) < 2 or not all(_word(t) for t in terms):
        raise LlmkitError(f"{key} {path}: group '{name}': replace takes two or more words, e.g. {example}")
    return TermGroup(name, kind, (tuple(str(term) for term in terms),))


def _word(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def counterfactuals(text: str, group: TermGroup) -> list[tuple[str, str]]:
    """The text's counterfactuals for one group, each with what was swapped (``he→she, her→him``); none when
    no term of the group is in the text."""
    pattern = group.pattern()
    found = [match.group(0) for match in pattern.finditer(text)]
    if not found:
        return []
    if group.kind == "swap":
        partner = {a.lower(): b for a, b in group.terms} | {b.lower(): a for a, b in group.terms}
        swapped = pattern.sub(lambda match: _cased(partner[match.group(0).lower()], match.group(0)), text)
        changes = dict.fromkeys(f"{word.lower()}→{partner[word.lower()].lower()}" for word in found)
        return [(swapped, ", ".join(changes))]
    variants = []
    members = group.terms[0]
    for present in dict.fromkeys(word.lower() for word in found):
        only = re.compile(r"\b" + re.escape(present) + r"\b", re.IGNORECASE)
        for other in members:
            if other.lower() != present:
                replaced = only.sub(lambda match, other=other: _cased(other, match.group(0)), text)
                variants.append((replaced, f"{present}→{other.lower()}"))
    return variants


def counterfactual_rows(texts: list[str], groups: list[TermGroup]) -> list[tuple[int, str]]:
    """Every counterfactual of every text (row index, new text), each group's as the probe makes them, in
    row order; a text made twice for a row (or equal to the row's own) is kept once."""
    made: list[tuple[int, str]] = []
    for index, text in enumerate(texts):
        seen = {text}
        for group in groups:
            for variant, _ in counterfactuals(text, group):
                if variant not in seen:
                    seen.add(variant)
                    made.append((index, variant))
    return made


def _cased(word: str, like: str) -> str:
    """``word`` in the case of ``like``: UPPER, Capitalised, or lower-case initial."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word[:1].lower() + word[1:]
