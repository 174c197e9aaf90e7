"""Cache files are written in chunks: the same bytes as safetensors' own ``save``, loaded by the same
loader, without holding the whole file in memory."""

from __future__ import annotations

import io
import tracemalloc

import pytest
import torch
from safetensors.torch import load_file, save

from timam.training import feature_cache
from timam.training.feature_cache import cached_tensor, write_safetensors


def tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(7, 5, 3, generator=generator)
    return {
        "features": states.reshape(7, 15),
        "token_states": states.half(),
        "bfloat16": states.bfloat16(),
        "non_contiguous": states.transpose(0, 2),
        "per_view": states[:, :, :2],
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 4),
        "ints": torch.arange(10, dtype=torch.int64),
        "mask": torch.arange(6) % 2 == 0,
    }


@pytest.mark.parametrize("name", list(tensors()))
@pytest.mark.parametrize("chunk_bytes", [1, 40, 1 << 20])
def test_chunked_files_are_what_safetensors_writes_and_load_identically(tmp_path, name, chunk_bytes):
    tensor = tensors()[name]
    path = tmp_path / "cache.safetensors"
    write_safetensors(path, tensor, chunk_bytes=chunk_bytes)
    assert path.read_bytes() == save({"tensor": tensor.contiguous()})
    loaded = load_file(path)["tensor"]
    assert loaded.dtype == tensor.dtype and torch.equal(loaded, tensor)


def test_a_save_holds_at_most_about_one_chunk_beyond_the_tensor(tmp_path):
    """tracemalloc sees the Python-side buffers of a save (``save`` returns the file as bytes)."""
    tensor = torch.randn(512, 8192)  # 16 MiB
    chunk = 1 << 20

    def peak(write) -> int:
        tracemalloc.start()
        try:
            write()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak(lambda: write_safetensors(tmp_path / "a.safetensors", tensor, chunk_bytes=chunk))
    in_memory = peak(lambda: (tmp_path / "b.safetensors").write_bytes(save({"tensor": tensor})))
    assert in_memory > tensor.numel() * 4  # what the earlier save held: the whole file
    assert streamed < 2 * chunk


def test_a_non_contiguous_tensor_goes_through_one_chunk_at_a_time(tmp_path, monkeypatch):
    """Its copies are torch's (tracemalloc cannot see them): each write is at most one chunk."""
    tensor, chunk = torch.randn(256, 1024).t(), 1 << 16
    written: list[int] = []

    class Recording(io.FileIO):
        def write(self, data) -> int:
            written.append(memoryview(data).nbytes)
            return super().write(data)

    monkeypatch.setattr(feature_cache, "open", lambda path, mode: Recording(path, mode), raising=False)
    write_safetensors(tmp_path / "c.safetensors", tensor, chunk_bytes=chunk)
    assert sum(written[2:]) == tensor.numel() * 4 and max(written[2:]) <= chunk
    assert torch.equal(load_file(tmp_path / "c.safetensors")["tensor"], tensor)


def test_cached_tensor_writes_through_the_chunked_writer(tmp_path):
    tensor = torch.randn(9, 4).half()
    assert torch.equal(cached_tensor(tmp_path, "k", lambda: tensor), tensor)
    assert (tmp_path / "k.safetensors").read_bytes() == save({"tensor": tensor})
    assert torch.equal(cached_tensor(tmp_path, "k", lambda: pytest.fail("computed again")), tensor)
