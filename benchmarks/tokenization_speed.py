"""Tokenising N captions cold versus loading them from the token cache (the tokenize_captions node).

Run: ``.venv/bin/python benchmarks/tokenization_speed.py [--captions N] [--max-length L]
[--tokenizer NAME] [--repeats R]``.

Times ``timam.tokenization.cached_tokenize`` with a fresh temporary cache directory:

* cold -- the first call: load the tokenizer, hash tokenizer + vocabulary + max length + captions
  into the cache key, tokenise every caption (padding to max length), write the safetensors file;
* cached -- a second call with the same inputs: load the tokenizer, hash, load the file (best of
  ``--repeats``).

Python imports are done before anything is timed. Also timed on their own, to show where the cached call spends its
time: loading the tokenizer
(``load_tokenizer``), the key (``tokenization_key``) and the bare tokenizer call. The default
``--captions 80440`` is all of CUHK-PEDES (68,126 train + 6,158 val + 6,156 test), which the node
tokenises in one go; captions are the demo captions cycled (real CUHK-PEDES captions are about as
long: ~20-30 words), each with a distinct caption id.

Reading the output: the last line holds ``cold_s``, ``cached_s`` and ``speedup`` = cold / cached.
A cached run is bounded below by ``tokenizer_load_s + key_s``: the key covers the whole vocabulary
and every caption, so it is recomputed on every run. Runs on the CPU only (tokenizers are CPU code).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common  # noqa: I001  (first: environment, sys.path, torchvision shim)
from _common import rate, result_line


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=80440)
    parser.add_argument("--max-length", type=int, default=64, help="tokenization.max_length")
    parser.add_argument("--tokenizer", default="offline:minilm", help="tokenization.tokenizer")
    parser.add_argument("--repeats", type=int, default=3, help="cached runs (best is reported)")
    return parser.parse_args()


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    args = parse_args()
    from timam.tokenization import cached_tokenize, load_tokenizer, tokenization_key

    captions = _common.cycle(_common.demo_captions(), args.captions)
    caption_ids = [f"caption-{i}" for i in range(len(captions))]
    words = sum(len(c.split()) for c in captions) / len(captions)
    print(_common.device_info(_common.pick("cpu")))
    print(
        f"captions: {len(captions)} (demo captions cycled, mean {words:.1f} words), tokenizer "
        f"{args.tokenizer}, max_length {args.max_length}"
    )

    load_tokenizer(args.tokenizer)  # untimed: imports transformers, so no timing below includes imports
    load_s, tokenizer = best_of(lambda: load_tokenizer(args.tokenizer), args.repeats)
    key_s, _ = best_of(lambda: tokenization_key(tokenizer, args.max_length, captions), args.repeats)
    bare_s, _ = best_of(
        lambda: tokenizer(
            captions, padding="max_length", truncation=True, max_length=args.max_length, return_tensors="pt"
        ),
        1,
    )
    with tempfile.TemporaryDirectory(prefix="timam-token-cache-") as cache_dir:
        call = lambda: cached_tokenize(  # noqa: E731
            caption_ids, captions, tokenizer_name=args.tokenizer, max_length=args.max_length, cache_dir=cache_dir
        )
        start = time.perf_counter()
        cold = call()
        cold_s = time.perf_counter() - start
        cached_s, cached = best_of(call, args.repeats)
        cache_mb = sum(p.stat().st_size for p in Path(cache_dir).iterdir()) / 2**20
    same = all((cold.tensors[k] == cached.tensors[k]).all() for k in cold.tensors)
    print(
        f"parts: load tokenizer {load_s:.3f} s, cache key {key_s:.3f} s, bare tokenizer call {bare_s:.3f} s "
        f"({rate(len(captions), bare_s):.0f} captions/s)"
    )
    print(
        f"cold cached_tokenize: {cold_s:.3f} s ({rate(len(captions), cold_s):.0f} captions/s); "
        f"from cache: {cached_s:.3f} s (best of {args.repeats}); cache file {cache_mb:.1f} MiB; "
        f"identical tensors: {same}"
    )
    print(
        result_line(
            "tokenization",
            captions=len(captions),
            max_length=args.max_length,
            tokenizer=args.tokenizer,
            cold_s=cold_s,
            cached_s=cached_s,
            speedup=cold_s / cached_s,
            cold_captions_per_s=rate(len(captions), cold_s),
            tokenizer_load_s=load_s,
            key_s=key_s,
            bare_tokenize_s=bare_s,
            cache_mb=cache_mb,
            identical=same,
        )
    )


if __name__ == "__main__":
    main()
