"""Attribute vocabularies for the attribute-learning family (AgNet-style attribute space, issue 29).

An attribute vocabulary is the list of V terms an image or caption is predicted to have: the
multi-label targets of the attribute predictors and the coordinates of the attribute space the hash
codes are made from. It is fitted on the training split only, so an evaluation or a search uses the
vocabulary its model was trained with (the lead stores it as a versioned catalog artifact: plain JSON
through :meth:`AttributeVocabulary.to_dict` / :meth:`AttributeVocabulary.from_dict`).

Two sources:

- ``labels``: the dataset's own attributes, when it has them -- the demo's people (``group=value``
  labels written beside the captions, :func:`reid_raw_attributes`) and CUB-200-2011's MTurk labels
  (:mod:`timam.sources.cub_attributes`). An image's targets are its labels; a caption's are its image's
  (:func:`label_targets`), as AgNet gives each text the attributes of its class.
- ``captions``: mined from the training captions when the data has no attributes: frequent content
  words (a stop list removes function words) and adjective-noun pairs. No part-of-speech tagger is
  installed, so a pair is two adjacent content words ("red coat", "long hair"): most such pairs in
  captions are a modifier and its noun. Each term is counted once per caption it occurs in; terms
  below ``min_count`` are dropped and the ``size`` most frequent kept, ties in frequency broken
  alphabetically so a fit is deterministic. A caption's targets are its own terms
  (:func:`caption_targets`), an image's the union over its captions (:func:`image_targets`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import pandas as pd
import torch
from torch import Tensor

from timam.sources.caption_table import BadInputError

__all__ = [
    "STOP_WORDS",
    "AttributeVocabulary",
    "attribute_groups",
    "caption_targets",
    "caption_terms",
    "fit_caption_vocabulary",
    "fit_label_vocabulary",
    "image_targets",
    "label_targets",
    "reid_raw_attributes",
]

VOCABULARY_FORMAT = 1
Source = Literal["captions", "labels"]
SOURCES: tuple[str, ...] = get_args(Source)

# Function words, and caption boilerplate that every description shares ("wearing", "also").
STOP_WORDS = frozenset(
    """a about above across after against along also among an and another any are around as at be
    been before behind below beneath beside between both but by can could did do does down dressed
    during each either for from had has have having he her here hers him his i in inside into is it
    its itself just like more most near next no nor not of off on one onto or other our out outside
    over own picture photo image same she should so some such than that the their them then there
    these they this those through to too toward towards under up upon very was wear wearing wears
    were what when where which while who whose with within without would you your""".split()
)
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


def _tokens(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())


def caption_terms(caption: str, *, pairs: bool = True, stop_words: frozenset[str] = STOP_WORDS) -> set[str]:
    """The candidate terms of one caption: its content words and adjacent content-word pairs."""
    tokens = _tokens(caption)
    content = [token not in stop_words and len(token) > 1 for token in tokens]
    terms = {token for token, keep in zip(tokens, content, strict=True) if keep}
    if pairs:
        adjacent = zip(tokens[:-1], tokens[1:], content[:-1], content[1:], strict=True)
        terms.update(f"{a} {b}" for a, b, x, y in adjacent if x and y)
    return terms


@dataclass(frozen=True)
class AttributeVocabulary:
    """V attribute terms in a fixed order (the columns of every target matrix), with how they were fitted.

    ``counts[i]``: the training captions (``captions``) or images (``labels``) that hold ``terms[i]``.
    ``fitted_with``: the fit's settings, kept so the artifact says how it was made.
    """

    terms: tuple[str, ...]
    counts: tuple[int, ...]
    source: Source
    fitted_with: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"vocabulary source must be one of {SOURCES}, got {self.source!r}")
        if not self.terms:
            raise ValueError("an attribute vocabulary needs at least one term")
        if len(self.counts) != len(self.terms):
            raise ValueError(f"vocabulary has {len(self.terms)} terms but {len(self.counts)} counts")
        repeated = sorted({term for term in self.terms if self.terms.count(term) > 1})
        if repeated:
            raise ValueError(f"vocabulary terms must be distinct; repeated: {repeated[:10]}")

    def __len__(self) -> int:
        return len(self.terms)

    def index(self) -> dict[str, int]:
        """Each term's column."""
        return {term: column for column, term in enumerate(self.terms)}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, with a format number so a later reader can tell an old file."""
        return {
            "format": VOCABULARY_FORMAT,
            "source": self.source,
            "terms": list(self.terms),
            "counts": list(self.counts),
            "fitted_with": dict(self.fitted_with),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "attribute vocabulary") -> AttributeVocabulary:
        """From :meth:`to_dict`'s values; a wrong or missing key raises naming it and ``where``."""
        if values.get("format") != VOCABULARY_FORMAT:
            raise ValueError(
                f"{where}: format {values.get('format')!r} is not {VOCABULARY_FORMAT}; refit the vocabulary "
                "with this version of timam"
            )
        missing = [key for key in ("source", "terms", "counts") if key not in values]
        if missing:
            raise ValueError(f"{where} lacks {missing}; it holds {sorted(values)}")
        try:
            return cls(
                terms=tuple(str(term) for term in values["terms"]),
                counts=tuple(int(count) for count in values["counts"]),
                source=values["source"],
                fitted_with=dict(values.get("fitted_with", {})),
            )
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None


def _train_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The training rows of a caption table: a vocabulary never sees validation or test data."""
    missing = [column for column in ("split", "caption", "image_id") if column not in table.columns]
    if missing:
        raise ValueError(f"the caption table lacks columns {missing}; it has {list(table.columns)}")
    rows = table[table["split"] == "train"]
    if rows.empty:
        raise ValueError("the caption table has no training rows to fit an attribute vocabulary on")
    return rows


def _ranked(counts: Counter[str], size: int | None, min_count: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Terms counted at least ``min_count`` times, most frequent first, ties alphabetical, at most ``size``."""
    kept = sorted(((term, n) for term, n in counts.items() if n >= min_count), key=lambda item: (-item[1], item[0]))
    kept = kept[:size] if size is not None else kept
    if not kept:
        raise ValueError(f"no attribute term is counted min_count={min_count} times in the training split")
    return tuple(term for term, _ in kept), tuple(n for _, n in kept)


def _check_fit(size: int | None, min_count: int) -> None:
    if size is not None and size < 1:
        raise ValueError(f"the vocabulary size must be at least 1, got {size}")
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")


def fit_caption_vocabulary(
    table: pd.DataFrame,
    *,
    size: int,
    min_count: int = 5,
    pairs: bool = True,
    stop_words: frozenset[str] = STOP_WORDS,
) -> AttributeVocabulary:
    """The ``size`` most frequent terms of the training captions of ``table`` (the caption table)."""
    _check_fit(size, min_count)
    counts: Counter[str] = Counter()
    for caption in _train_rows(table)["caption"]:
        counts.update(caption_terms(str(caption), pairs=pairs, stop_words=stop_words))
    terms, kept = _ranked(counts, size, min_count)
    settings = {"size": size, "min_count": min_count, "pairs": pairs, "stop_words": sorted(stop_words)}
    return AttributeVocabulary(terms, kept, "captions", settings)


def fit_label_vocabulary(
    table: pd.DataFrame, labels_by_image: Mapping[str, Iterable[str]], *, min_count: int = 1, size: int | None = None
) -> AttributeVocabulary:
    """The labels of the training images of ``table``, counted once per image; every training image needs labels."""
    _check_fit(size, min_count)
    images = sorted(set(_train_rows(table)["image_id"].astype(str)))
    unlabelled = [image for image in images if image not in labels_by_image]
    if unlabelled:
        raise ValueError(
            f"{len(unlabelled)} training image(s) have no attribute labels, e.g. {unlabelled[:3]}; label them or "
            "fit the vocabulary from the captions instead"
        )
    counts: Counter[str] = Counter()
    for image in images:
        counts.update(set(labels_by_image[image]))
    terms, kept = _ranked(counts, size, min_count)
    return AttributeVocabulary(terms, kept, "labels", {"size": size, "min_count": min_count})


def label_targets(vocabulary: AttributeVocabulary, labels: Sequence[Iterable[str]]) -> Tensor:
    """``(n, V)`` float32 multi-hot rows of ``labels`` (one list per item); labels outside the vocabulary
    (too rare in training, or never seen there) have no column and are left out."""
    column = vocabulary.index()
    targets = torch.zeros(len(labels), len(vocabulary))
    for row, item in enumerate(labels):
        for label in item:
            if label in column:
                targets[row, column[label]] = 1.0
    return targets


def caption_targets(vocabulary: AttributeVocabulary, captions: Sequence[str]) -> Tensor:
    """``(n, V)`` float32: the vocabulary terms each caption holds (its words and adjacent word pairs)."""
    if vocabulary.source != "captions":
        raise ValueError(
            "a label vocabulary's terms are not words: give each caption its image's labels with label_targets"
        )
    # Every word and adjacent pair is a candidate: a vocabulary term is content by construction.
    return label_targets(vocabulary, [caption_terms(caption, stop_words=frozenset()) for caption in captions])


def image_targets(
    vocabulary: AttributeVocabulary,
    image_ids: Sequence[str],
    captions: Sequence[str],
    caption_image_ids: Sequence[str],
) -> Tensor:
    """``(len(image_ids), V)`` float32: the union of the caption targets of each image's captions."""
    if len(captions) != len(caption_image_ids):
        raise ValueError(f"{len(captions)} captions but {len(caption_image_ids)} caption image ids")
    row = {image: position for position, image in enumerate(image_ids)}
    unknown = sorted({image for image in caption_image_ids if image not in row})
    if unknown:
        raise ValueError(f"captions name images that are not in image_ids, e.g. {unknown[:3]}")
    per_caption = caption_targets(vocabulary, captions)
    targets = torch.zeros(len(image_ids), len(vocabulary))
    index = torch.tensor([row[image] for image in caption_image_ids], dtype=torch.long)
    return targets.index_add_(0, index, per_caption).clamp_(max=1.0)


def attribute_groups(vocabulary: AttributeVocabulary) -> dict[str, list[int]]:
    """Columns of each attribute group of a label vocabulary (``group=value`` or CUB's ``group::value``).

    In a group of the demo's labels exactly one value is true per image, so a group's prediction is
    the argmax over its columns and its accuracy can be measured against the generator's truth.
    """
    groups: dict[str, list[int]] = {}
    for column, term in enumerate(vocabulary.terms):
        name = term.split("::", 1)[0] if "::" in term else term.split("=", 1)[0]
        groups.setdefault(name, []).append(column)
    return groups


def reid_raw_attributes(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each image's ``attributes`` list from ``reid_raw.json`` records, keyed by ``file_path`` (the
    caption table's ``image_id`` for this format). The demo writes them; CUHK-PEDES has none."""
    labels: dict[str, list[str]] = {}
    for position, record in enumerate(records):
        values = record.get("attributes")
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise BadInputError(
                f"reid_raw.json record {position} has no 'attributes' list of strings (got {values!r}); "
                "regenerate the demo data, or fit the vocabulary from the captions for data without attributes"
            )
        labels[str(record["file_path"])] = list(values)
    return labels
