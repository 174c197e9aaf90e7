"""Hamming search over packed hash codes at 1M-100M: exact and indexed speed, memory, recall (issue 29).

Run, one size per process, alone on the machine from 10M up:
``.venv/bin/python benchmarks/hamming_speed.py --n 1000000`` (the default; about a minute),
``--n 10000000`` (~5 minutes, 0.6 GB), ``--n 100000000`` (~17 minutes, 3.1 GB at its peak:
the exact index and the IVF side by side), or ``--tiny`` (20,000 codes, seconds; the test suite runs it).
``--real CODES.npy`` measures a file of packed codes too (uint8, ``(n, bits / 8)``, e.g. a hashing
model's gallery codes), queried by ``--real-queries`` or by its own first rows.

Data. No trained model has coded a million images here, so the codes are synthetic, drawn as a
trained hashing model's lie: 512 cluster centres (classes), themselves drawn around 32 topic codes
(25% of the bits flipped, so classes share structure); cluster sizes log-normal; each code is its
centre with every bit flipped with a per-cluster, per-bit probability ``0.5 * Beta(0.6, 3)`` (mean
0.08: most bits confident, a few close to a coin toss, as tanh outputs near 0 are). Queries are held
out: half "image-like" (new draws), half "text-like" (flip probabilities x1.5 + 0.02: the other
modality lands farther from its class). The script prints the structure (exact 1st / 10th neighbour
distance, random-pair distance, rows tied at the 10th distance).

Measured in one process: the exact index (``binary_flat_from_chunks``: codes generated in chunks of
250,000 straight into FAISS's vector, so the peak stays near their size) searched by
:class:`timam.index.binary_index.BinarySearch` (what ``ImageIndex.search`` calls; the row table is
left out: 100M paths would dwarf the codes): single-query p50 / p99, a batch's queries/s, the cost
per code, and the resident memory it added (VmRSS growth over generating, building and searching;
VmRSS and VmHWM of the whole process are printed too, imports included). Five queries are checked
against a numpy brute force over all codes (XOR, popcount, lowest distances with ties by row). Then
the IVF the planner would choose at this size (``plan_binary_index`` with ``flat_max=0`` and
``--index-budget``), built from the same codes: build time, memory added, p50 / p99, queries/s,
recall@10 under ties against the exact answer (:func:`timam.index.binary_index.recall_under_ties`,
on distances recomputed from the codes), and an nprobe sweep. ``--compare`` adds FAISS's hash indexes
(``IndexBinaryHash``, ``IndexBinaryMultiHash``) with nflip sweeps. Last line: ``hamming: n=... bits=...
exact_p50_ms=... exact_p99_ms=... exact_mb=... ivf_recall10=... ivf_p50_ms=... ivf_p99_ms=...
ivf_build_s=... ivf_mb=...`` and the rest.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np

import _common  # noqa: I001  (first: environment, sys.path, torchvision shim)
from _common import result_line
from timam.index.binary_index import (
    BinarySearch,
    apply_binary_search_params,
    binary_flat_from_chunks,
    build_binary_index,
    check_codes,
    plan_binary_index,
    recall_under_ties,
)
from timam.index.faiss_index import IndexPlan, configure_threads, parse_bytes

TARGETS = {"exact_p50_ms": 250.0, "exact_mb": 1024.0, "ivf_recall10": 0.95, "ivf_p50_ms": 10.0}  # at 100M
CHUNK = 1_000_000  # codes per block of the numpy brute force
GEN_CHUNK = 250_000  # codes generated at a time: ~80 MB of temporaries


class CodeModel:
    """The synthetic code distribution described in the module docstring."""

    def __init__(self, bits: int, clusters: int, seed: int, topics: int = 32) -> None:
        rng = np.random.default_rng(seed)
        self.bits = bits
        topic = rng.integers(0, 2, (topics, bits), dtype=np.uint8)
        flips = (rng.random((clusters, bits)) < 0.25).astype(np.uint8)
        self.centres = topic[rng.integers(0, topics, clusters)] ^ flips
        p = 0.5 * rng.beta(0.6, 3.0, (clusters, bits))
        self.thresholds = np.round(p * 256).astype(np.uint8)  # flip where a random byte is below
        self.text_thresholds = np.round(np.minimum(0.5, 1.5 * p + 0.02) * 256).astype(np.uint8)
        sizes = rng.lognormal(0.0, 1.0, clusters)
        self.weights = sizes / sizes.sum()

    def draw(self, rng: np.random.Generator, count: int, *, text: bool = False) -> np.ndarray:
        owner = rng.choice(len(self.centres), count, p=self.weights)
        thresholds = (self.text_thresholds if text else self.thresholds)[owner]
        flips = rng.integers(0, 256, (count, self.bits), dtype=np.uint8) < thresholds
        return np.packbits(self.centres[owner] ^ flips, axis=1)

    def chunks(self, rng: np.random.Generator, count: int) -> Iterator[np.ndarray]:
        for start in range(0, count, GEN_CHUNK):
            yield self.draw(rng, min(GEN_CHUNK, count - start))


# ----------------------------------------------------------------------------- measurements


def memory_mb(field: str = "VmRSS") -> float:
    """The process's resident set (``VmRSS``) or its peak (``VmHWM``), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def latencies_ms(search: Callable, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty(len(queries))
    for i in range(len(queries)):
        start = time.perf_counter()
        search(queries[i : i + 1], k)
        out[i] = (time.perf_counter() - start) * 1e3
    return out


def true_distances(codes: np.ndarray, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Hamming distances of the returned rows, recomputed from the codes (-1 where no row)."""
    picked = codes[np.where(rows < 0, 0, rows)]
    distances = np.unpackbits(queries[:, None, :] ^ picked, axis=2).sum(axis=2)
    return np.where(rows < 0, -1, distances)


def brute_force(codes: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k lowest distances of one query over all codes, ties by lower row, by numpy alone.

    Two passes over blocks (a histogram of distances finds the k-th, then the rows within it are
    collected), so its memory is a block's, not a distance per code.
    """

    def blocks() -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(codes), CHUNK):
            block = codes[start : start + CHUNK] ^ query
            words = block.view(np.uint64) if block.shape[1] % 8 == 0 else block  # popcount 8 bytes at a time
            yield start, np.bitwise_count(words).sum(axis=1, dtype=np.int32)

    counts = sum(np.bincount(distances, minlength=codes.shape[1] * 8 + 1) for _, distances in blocks())
    kth = int(np.searchsorted(np.cumsum(counts), k))  # the first distance reaching k rows
    rows = np.concatenate([start + np.flatnonzero(distances <= kth) for start, distances in blocks()])
    distances = np.concatenate([distances[distances <= kth] for _, distances in blocks()])
    order = np.lexsort((rows, distances))[:k]
    return distances[order], rows[order]


def timings(name: str, search: Callable, queries: np.ndarray, args: argparse.Namespace) -> dict:
    lat = latencies_ms(search, queries[: args.latency_queries], args.k)
    start = time.perf_counter()
    scores, rows = search(queries, args.k)
    qps = len(queries) / (time.perf_counter() - start)
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    print(f"[{name}] single query p50 {p50:.3f} ms, p99 {p99:.3f} ms; batch of {len(queries)}: {qps:,.0f} queries/s")
    return {"p50_ms": p50, "p99_ms": p99, "qps": qps, "scores": scores, "rows": rows}


def measure_exact(name: str, search: BinarySearch, queries: np.ndarray, args: argparse.Namespace) -> dict:
    assert search.codes is not None
    result = timings(f"{name} exact", search, queries, args)
    for i in range(min(5, len(queries))):
        distances, rows = brute_force(search.codes, queries[i], args.k)
        if not (np.array_equal(rows, result["rows"][i]) and np.array_equal(-distances, result["scores"][i])):
            raise AssertionError(f"exact search differs from the numpy brute force on query {i}")
    result["ns_per_code"] = result["p50_ms"] * 1e6 / search.count
    one_thread = latencies_ms(BinarySearch(search.index, threads=1), queries[:20], args.k)
    result["ns_per_code_1t"] = float(np.median(one_thread)) * 1e6 / search.count
    print(
        f"[{name} exact] equals the numpy brute force on {min(5, len(queries))} queries; single query "
        f"{result['ns_per_code']:.3f} ns per code on {search.threads} thread(s), "
        f"{result['ns_per_code_1t']:.3f} on one (median of 20)"
    )
    return result


def measure_ivf(name: str, codes: np.ndarray, queries: np.ndarray, truth: np.ndarray, args) -> dict:
    plan = plan_binary_index(len(codes), args.bits, memory_budget_bytes=args.index_budget, flat_max=0)
    if args.nlist:
        plan = IndexPlan(
            kind=plan.kind, factory=f"BIVF{args.nlist}", search_params=plan.search_params, train_size=plan.train_size
        )
    print(f"[{name} ivf] plan {plan.factory} {plan.search_params}, estimated {plan.estimated_bytes / 2**20:,.0f} MiB")
    before = memory_mb()
    start = time.perf_counter()
    index = build_binary_index(codes, plan, bits=args.bits, seed=args.seed, threads=args.threads)
    build_s = time.perf_counter() - start
    search = BinarySearch(index)
    result = timings(f"{name} ivf", search, queries, args)
    result |= {"build_s": build_s, "mb": memory_mb() - before, "plan": plan.factory}
    found = true_distances(codes, queries, result["rows"])
    result["recall10"] = float(recall_under_ties(found, truth).mean())
    half = len(queries) // 2
    print(
        f"[{name} ivf] build {build_s:.1f} s, +{result['mb']:.0f} MiB resident; recall@{args.k} under ties "
        f"{result['recall10']:.4f} (image-like {recall_under_ties(found[:half], truth[:half]).mean():.4f}, "
        f"text-like {recall_under_ties(found[half:], truth[half:]).mean():.4f})",
        flush=True,
    )
    for nprobe in args.sweep:
        sweep_point(f"{name} ivf nprobe {nprobe:>4}", index, search, {"nprobe": nprobe}, codes, queries, truth, args)
    apply_binary_search_params(index, plan.search_params)
    return result


def sweep_point(label: str, index, search: Callable, params: dict, codes, queries, truth, args) -> None:
    apply_binary_search_params(index, params)
    lat = latencies_ms(search, queries[: args.latency_queries], args.k)
    found = true_distances(codes, queries, search(queries, args.k)[1])
    print(
        f"[{label}] recall@{args.k} {recall_under_ties(found, truth).mean():.4f}, "
        f"p50 {np.percentile(lat, 50):.3f} ms, p99 {np.percentile(lat, 99):.3f} ms",
        flush=True,
    )


def compare_hashes(name: str, codes: np.ndarray, queries: np.ndarray, truth: np.ndarray, args) -> None:
    """FAISS's hash indexes at this size, for the record (the planner does not use them)."""
    for factory, flips in (("BHash16", (1, 2, 3)), ("BHash20", (2, 3)), ("BHash4x16", (0, 1)), ("BHash3x20", (1, 2))):
        before = memory_mb()
        start = time.perf_counter()
        index = faiss.index_binary_factory(args.bits, factory)
        for lo in range(0, len(codes), CHUNK):
            index.add(codes[lo : lo + CHUNK])
        print(f"[{name} {factory}] build {time.perf_counter() - start:.1f} s, +{memory_mb() - before:.0f} MiB")
        search = BinarySearch(index)
        for nflip in flips:
            sweep_point(f"{name} {factory} nflip {nflip}", index, search, {"nflip": nflip}, codes, queries, truth, args)
        del index, search


def structure(codes: np.ndarray, queries: np.ndarray, truth: np.ndarray, search: BinarySearch, args) -> None:
    rng = np.random.default_rng(args.seed + 7)
    pairs = rng.integers(0, len(codes), (2, 10_000))
    random_pairs = np.unpackbits(codes[pairs[0]] ^ codes[pairs[1]], axis=1).sum(axis=1).mean()
    half = len(queries) // 2
    wide = search(queries[:20], min(len(codes), 1000))[0]
    tied = (-wide <= truth[:20, -1:]).sum(axis=1)
    print(
        f"structure: random-pair distance {random_pairs:.1f} of {args.bits}; exact 1st / {args.k}th neighbour "
        f"{truth[:, 0].mean():.2f} / {truth[:, -1].mean():.2f} (image-like {truth[:half, -1].mean():.2f}, text-like "
        f"{truth[half:, -1].mean():.2f}); rows within the {args.k}th distance, median of 20 queries: "
        f"{np.median(tied):.0f} (capped at 1000)",
        flush=True,
    )


# ----------------------------------------------------------------------------- main


def run(name: str, index: faiss.IndexBinaryFlat, queries: np.ndarray, before_mb: float, args) -> dict:
    search = BinarySearch(index)
    assert search.codes is not None
    exact = measure_exact(name, search, queries, args)
    exact["mb"] = memory_mb() - before_mb
    print(
        f"[{name} exact] +{exact['mb']:.0f} MiB resident for {index.ntotal:,} codes "
        f"({index.ntotal * index.code_size / 2**20:,.0f} MiB of codes); process VmRSS {memory_mb():,.0f} MiB, "
        f"peak VmHWM {memory_mb('VmHWM'):,.0f} MiB",
        flush=True,
    )
    truth = -exact["scores"].astype(np.int32)
    structure(search.codes, queries, truth, search, args)
    ivf = measure_ivf(name, search.codes, queries, truth, args)
    if args.compare:
        compare_hashes(name, search.codes, queries, truth, args)
    chosen = plan_binary_index(index.ntotal, args.bits, memory_budget_bytes=args.budget)
    print(
        f"[{name}] the planner under --budget {args.budget / 2**20:,.0f} MiB: {chosen.factory} {chosen.search_params}"
    )
    return {"exact": exact, "ivf": ivf, "plan": chosen.factory}


def real_codes(args) -> tuple[np.ndarray, np.ndarray]:
    codes = check_codes(np.load(args.real), args.bits, args.real)
    queries = check_codes(np.load(args.real_queries), args.bits, args.real_queries) if args.real_queries else None
    return codes, codes[: min(len(codes), args.queries)] if queries is None else queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic codes")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument(
        "--queries", type=int, default=1000, help="recall and batch queries (half image-, half text-like)"
    )
    parser.add_argument("--latency-queries", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--budget", type=parse_bytes, default=parse_bytes("1GiB"), help="index.memory_budget")
    parser.add_argument("--index-budget", type=parse_bytes, default=parse_bytes("8GiB"), help="the IVF's budget")
    parser.add_argument("--nlist", type=int, default=0, help="override the IVF's list count")
    parser.add_argument("--sweep", type=lambda s: [int(v) for v in s.split(",") if v], default=[8, 16, 32, 64, 128])
    parser.add_argument("--compare", action="store_true", help="also IndexBinaryHash / IndexBinaryMultiHash")
    parser.add_argument("--real", default="", help="a .npy of packed codes (uint8, n x bits/8) to measure too")
    parser.add_argument("--real-queries", default="", help="a .npy of packed query codes (default: --real's rows)")
    parser.add_argument("--threads", type=int, default=0, help="FAISS threads (0: the CPUs this process may use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="n=20000, 100 queries, one thread (seconds)")
    args = parser.parse_args()
    if args.tiny:  # one thread: on a busy machine FAISS's k-means waits at OpenMP barriers (8 s instead of 0.1)
        args.n, args.queries, args.latency_queries, args.sweep = 20_000, 100, 20, [4, 8]
        args.threads = args.threads or 1
    threads = configure_threads(args.threads)
    print(
        _common.device_info(_common.pick("cpu")) + f", faiss {faiss.__version__} threads {threads}, pid {os.getpid()}"
    )

    model = CodeModel(args.bits, 512, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    half = args.queries // 2
    queries = np.vstack([model.draw(rng, half), model.draw(rng, args.queries - half, text=True)])
    before = memory_mb()
    start = time.perf_counter()
    index = binary_flat_from_chunks(model.chunks(rng, args.n), args.n, args.bits)
    seconds = time.perf_counter() - start
    print(f"synthetic {args.n:,} x {args.bits}-bit codes generated into the exact index in {seconds:.1f} s")
    result = run("synthetic", index, queries, before, args)
    del index
    if args.real:
        codes, real_queries = real_codes(args)
        real_index = binary_flat_from_chunks([codes], len(codes), args.bits)
        run(
            f"real {args.real}",
            real_index,
            real_queries,
            memory_mb(),
            argparse.Namespace(**{**vars(args), "sweep": []}),
        )

    exact, ivf = result["exact"], result["ivf"]
    values = {
        "exact_p50_ms": exact["p50_ms"],
        "exact_mb": exact["mb"],
        "ivf_recall10": ivf["recall10"],
        "ivf_p50_ms": ivf["p50_ms"],
    }
    met = {key: values[key] >= goal if key == "ivf_recall10" else values[key] <= goal for key, goal in TARGETS.items()}
    print(
        f"targets (set for n=100,000,000; this run n={args.n:,}): "
        + ", ".join(f"{key} {'met' if met[key] else 'MISSED'} ({goal})" for key, goal in TARGETS.items())
        + f"; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        result_line(
            "hamming",
            n=args.n,
            bits=args.bits,
            exact_p50_ms=exact["p50_ms"],
            exact_p99_ms=exact["p99_ms"],
            exact_qps=round(exact["qps"]),
            exact_mb=round(exact["mb"], 1),
            ns_per_code=exact["ns_per_code"],
            ns_per_code_1t=exact["ns_per_code_1t"],
            ivf_recall10=ivf["recall10"],
            ivf_p50_ms=ivf["p50_ms"],
            ivf_p99_ms=ivf["p99_ms"],
            ivf_qps=round(ivf["qps"]),
            ivf_build_s=round(ivf["build_s"], 1),
            ivf_mb=round(ivf["mb"], 1),
            ivf_plan=ivf["plan"],
            peak_mb=round(memory_mb("VmHWM"), 1),
            plan=result["plan"],
            targets_met=all(met.values()),
        )
    )


if __name__ == "__main__":
    main()
