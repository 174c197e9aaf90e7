"""Which test queries the report's example figures show, and what each retrieved.

Sampled queries show what is typical; the best and worst by average precision show where the
model fails. Results are the top-K by score, ties by gallery index (as ``topk_indices``), each
marked relevant or not under the evaluation's relevance rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from timam.figures.ranking import ImageQueryExample, RankedCaption, RankedImage, TextQueryExample
from timam.formats.tensor_bundle import TensorBundle
from timam.retrieval.ranking import topk_indices
from timam.retrieval.relevance import embedded_split_labels


def sample_queries(n: int, count: int, seed: int) -> list[int]:
    """``count`` distinct indices of ``range(n)``, reproducible, in ascending order."""
    return sorted(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False).tolist())


def _metadata_list(bundle: TensorBundle, key: str, what: str) -> list[str]:
    values = bundle.metadata.get(key)
    if values is None:
        raise ValueError(
            f"{what} have no {key!r} in their metadata (made by an older timam); "
            "re-run `kedro run --pipelines evaluate` to embed the split again"
        )
    return list(values)


@dataclass(frozen=True)
class RankedExamples:
    """What the example figures need: embeddings, relevance labels, paths and captions."""

    images: torch.Tensor
    texts: torch.Tensor
    image_labels: torch.Tensor
    text_labels: torch.Tensor
    paths: list[str]
    captions: list[str]
    caption_image: torch.Tensor

    @classmethod
    def of(cls, image_embeddings: TensorBundle, text_embeddings: TensorBundle, relevance: str) -> RankedExamples:
        image_labels, text_labels = embedded_split_labels(image_embeddings, text_embeddings, relevance)
        return cls(
            images=image_embeddings.tensors["embeddings"],
            texts=text_embeddings.tensors["embeddings"],
            image_labels=image_labels,
            text_labels=text_labels,
            paths=_metadata_list(image_embeddings, "image_paths", "image_embeddings"),
            captions=_metadata_list(text_embeddings, "captions", "text_embeddings"),
            caption_image=text_embeddings.tensors["image_index"],
        )

    def text_examples(self, queries: list[int], k: int, notes: list[str] | None = None) -> list[TextQueryExample]:
        """Caption queries with their top-``k`` images (ties by gallery index, as ``topk_indices``)."""
        scores, found = topk_indices(self.texts[queries], self.images, min(k, len(self.images)))
        return [
            TextQueryExample(
                caption=(f"{notes[row]}  " if notes else "") + self.captions[q],
                target_path=self.paths[int(self.caption_image[q])],
                results=[
                    RankedImage(self.paths[int(j)], float(s), bool(self.image_labels[j] == self.text_labels[q]))
                    for s, j in zip(scores[row], found[row], strict=True)
                ],
            )
            for row, q in enumerate(queries)
        ]

    def image_examples(self, queries: list[int], k: int, notes: list[str] | None = None) -> list[ImageQueryExample]:
        """Image queries with their top-``k`` captions."""
        scores, found = topk_indices(self.images[queries], self.texts, min(k, len(self.texts)))
        return [
            ImageQueryExample(
                path=self.paths[q],
                results=[
                    RankedCaption(self.captions[int(j)], float(s), bool(self.text_labels[j] == self.image_labels[q]))
                    for s, j in zip(scores[row], found[row], strict=True)
                ],
                label=notes[row] if notes else "",
            )
            for row, q in enumerate(queries)
        ]


def best_and_worst(average_precision: torch.Tensor, count: int) -> tuple[list[int], list[str]]:
    """The ``count`` highest-AP queries, then the ``count`` lowest-AP of the rest (ties by query
    index), with a note for each. A query is shown once, even when many share one AP."""
    values = average_precision.numpy()
    n = min(count, len(values) // 2) or min(count, len(values))
    order = np.argsort(-values, kind="stable")
    best, rest = order[:n], order[n:]
    worst = rest[np.argsort(values[rest], kind="stable")][:n]
    notes = [f"[best {i + 1}, AP {float(values[q]):.3f}]" for i, q in enumerate(best)]
    notes += [f"[worst {i + 1}, AP {float(values[q]):.3f}]" for i, q in enumerate(worst)]
    return best.tolist() + worst.tolist(), notes
