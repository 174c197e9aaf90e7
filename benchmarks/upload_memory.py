"""Memory of ``timam serve`` under concurrent worst-case image uploads (issue 27, item 7).

Run: ``.venv/bin/python benchmarks/upload_memory.py`` (about a minute on the shared 2-core machine).

It starts the real server (``python -m timam.serve``) in its own process on 127.0.0.1 over a tiny
index (the tests' one: six 32 x 16 PNGs and a random tiny model; ``--index`` takes a real index
folder), sends one small query to warm it up, and reads its resident set (``VmRSS``) as the idle
figure. Then, for each case, ``--clients`` (16) clients upload the same image at the same moment,
``--rounds`` times; a sampler reads ``VmRSS`` every 20 ms, and ``VmHWM`` gives the exact peak. Two
seconds after the last round it reads ``VmRSS`` again ("after"). The cases are the worst an upload
can do per byte sent:

- ``bomb``: the issue's 38 KB PNG of 6300 x 6300 px (39.7 MP, about 270 MB once decoded);
- ``png16``: the largest 16-bit grey PNG under the pixel cap (4000 x 4000: 32 MB decoded, 96 MB
  with its RGB copy) -- a PNG can only be decoded whole;
- ``rgba``: the largest RGBA PNG under the cap (4000 x 4000, 64 MB decoded);
- ``jpeg``: an 8000 x 6000 JPEG (48 MP), which a JPEG decoder can read at reduced scale.

Targets: the peak stays under 1.5 GB with 16 clients, and memory returns afterwards (after is
within ``RETURN_MB`` of idle). Run it against another checkout's code with ``PYTHONPATH=<src>``
(server flags it does not know are only passed when given). The last line is ``upload_memory:
idle_mb=... peak_mb=... after_mb=... under_target=... returns=...`` with per-case numbers after it.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from PIL import Image

from _common import REPO, result_line  # environment, sys.path

TARGET_MB = 1536.0
RETURN_MB = 128.0


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def worst_cases() -> dict[str, tuple[bytes, str]]:
    """Each case's file and content type (images made in memory, one at a time)."""
    jpeg = io.BytesIO()
    Image.radial_gradient("L").resize((8000, 6000)).save(jpeg, format="JPEG", quality=90)
    return {
        "bomb": (_png(Image.new("1", (6300, 6300))), "image/png"),
        "png16": (_png(Image.new("I;16", (4000, 4000), 1000)), "image/png"),
        "rgba": (_png(Image.new("RGBA", (4000, 4000), (10, 20, 30, 40))), "image/png"),
        "jpeg": (jpeg.getvalue(), "image/jpeg"),
    }


def _status_kb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def upload(port: int, data: bytes, content_type: str) -> int:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(
            "POST", "/api/search/image?k=3", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def burst(port: int, pid: int, data: bytes, content_type: str, clients: int) -> tuple[Counter, float, float]:
    """``clients`` simultaneous uploads: their statuses, the highest sampled RSS and the wall time."""
    statuses: Counter = Counter()
    start = threading.Barrier(clients + 1)
    done = threading.Event()
    highest = [rss_mb(pid)]

    def client() -> None:
        start.wait()
        try:
            statuses[upload(port, data, content_type)] += 1
        except OSError as error:
            statuses[type(error).__name__] += 1

    def sampler() -> None:
        while not done.is_set():
            highest[0] = max(highest[0], rss_mb(pid))
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    watcher = threading.Thread(target=sampler)
    for thread in (*threads, watcher):
        thread.start()
    started = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    return statuses, highest[0], wall


def start_server(index: Path, port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "timam.serve", "--index", str(index), "--port", str(port), "--device", "cpu"]
    command += ["--log-level", "warning", *extra]
    process = subprocess.Popen(command, cwd=REPO)
    deadline = time.monotonic() + 120
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/info")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"timam serve did not start: {' '.join(command)}")
        time.sleep(0.3)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, default=None, help="an index folder (default: a tiny one in /tmp)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", default="bomb,png16,rgba,jpeg")
    parser.add_argument("--server-args", default="", help="extra `timam serve` flags, e.g. '--max-image-queries 2'")
    args = parser.parse_args()

    index = args.index
    if index is None:
        sys.path.insert(0, str(REPO))  # the tests' tiny index builder
        from tests.search.tiny_index import build_tiny_index

        index = build_tiny_index(Path(tempfile.mkdtemp(prefix="timam_upload_memory_"))).root
    cases = {name: case for name, case in worst_cases().items() if name in args.cases.split(",")}
    port = free_port()
    server = start_server(index, port, args.server_args.split())
    try:
        small = _png(Image.radial_gradient("L").resize((64, 32)).convert("RGB"))
        upload(port, small, "image/png")  # the first query loads what a query needs
        idle = rss_mb(server.pid)
        print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
        print(f"server pid {server.pid}, idle RSS {idle:.0f} MB; {args.clients} clients x {args.rounds} rounds")
        per_case = {}
        for name, (data, content_type) in cases.items():
            seen: Counter = Counter()
            highest = wall = 0.0
            for _ in range(args.rounds):
                statuses, top, took = burst(port, server.pid, data, content_type, args.clients)
                seen.update(statuses)
                highest, wall = max(highest, top), max(wall, took)
            print(
                f"{name:6s} {len(data) / 1024:8.0f} KB  statuses {dict(seen)}  RSS max {highest:.0f} MB  {wall:.1f} s"
            )
            per_case[name] = {"kb": round(len(data) / 1024), "statuses": dict(seen), "rss_max_mb": round(highest)}
        time.sleep(2)
        after, peak = rss_mb(server.pid), peak_mb(server.pid)
    finally:
        server.terminate()
        server.wait(20)
    print(f"peak RSS (VmHWM) {peak:.0f} MB, {after:.0f} MB two seconds after the last upload")
    print(json.dumps(per_case))
    print(
        result_line(
            "upload_memory",
            idle_mb=idle,
            peak_mb=peak,
            after_mb=after,
            under_target=peak < TARGET_MB,
            returns=after - idle < RETURN_MB,
            clients=args.clients,
            **{f"{name}_max_mb": float(values["rss_max_mb"]) for name, values in per_case.items()},
        )
    )


if __name__ == "__main__":
    main()
