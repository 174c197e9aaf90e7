"""Caption embedding batched by length gives each caption what it gets on its own, in input order."""

import warnings

import torch

from tests.training.tiny_run import TINY_MODEL
from timam.inference.embedding import distinct_captions, text_outputs
from timam.models.timam import TimamModel


def captions_of_varied_length(count: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, width + 1, (count,), generator=generator)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, 900, (count, width), generator=generator) * mask  # right padding with 0
    return ids, mask


def test_length_batched_outputs_match_one_caption_at_a_time():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TimamModel(TINY_MODEL).eval()
    ids, mask = captions_of_varied_length(23, 12)
    cpu = torch.device("cpu")
    embeddings = text_outputs(
        model, ids, mask, project=True, batch_size=5, device=cpu, desc="t", show_progress=False, precision="auto"
    )
    states = text_outputs(
        model, ids, mask, project=False, batch_size=5, device=cpu, desc="t", show_progress=False, precision="auto"
    )
    assert embeddings.shape == (23, TINY_MODEL.embedding_dim) and states.shape == (
        23,
        12,
        TINY_MODEL.word_embedding_dim,
    )
    with torch.no_grad():
        for row in range(len(ids)):
            length = int(mask[row].sum())
            alone = model.text_encoder(ids[row : row + 1, :length], mask[row : row + 1, :length])
            assert torch.allclose(embeddings[row], alone[0], atol=1e-5), row
            own_states = model.text_encoder.word_states(ids[row : row + 1, :length], mask[row : row + 1, :length])
            assert torch.allclose(states[row, :length].float(), own_states[0].half().float())
            assert not states[row, length:].any(), "padding beyond the caption is zero"


def test_repeated_captions_are_embedded_once_and_tie_exactly():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TimamModel(TINY_MODEL).eval()
    ids, mask = captions_of_varied_length(20, 12)
    repeats = torch.tensor([0, 7, 0, 19, 3, 7, 0])  # some rows many times, spread over the input
    ids, mask = torch.cat([ids, ids[repeats]]), torch.cat([mask, mask[repeats]])
    seen: list[int] = []
    original = model.text_encoder.word_states
    model.text_encoder.word_states = lambda i, m: seen.append(len(i)) or original(i, m)
    embeddings = text_outputs(
        model,
        ids,
        mask,
        project=True,
        batch_size=4,
        device=torch.device("cpu"),
        desc="t",
        show_progress=False,
        precision="auto",
    )
    assert sum(seen) == 20, "each distinct caption runs through the encoder once"
    for offset, row in enumerate(repeats.tolist()):
        assert torch.equal(embeddings[20 + offset], embeddings[row])
    first, inverse = distinct_captions(ids, mask)
    assert first.tolist() == list(range(20)) and torch.equal(inverse[20:], repeats)


def _projection_dtypes(model: TimamModel) -> list[tuple[torch.dtype, torch.dtype]]:
    """(input, output) dtype of every call of either projection."""
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    for projection in (model.image_encoder.projection, model.text_encoder.projection):
        projection.register_forward_hook(lambda _, inputs, output: seen.append((inputs[0].dtype, output.dtype)))
    return seen


def test_bfloat16_encoders_still_give_float32_projections(tmp_path):
    """The GPU's bf16 autocast, run on the CPU: backbone and transformer in bf16, projections in float32."""
    from PIL import Image

    from timam.inference.embedding import image_outputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TimamModel(TINY_MODEL).eval()
    paths = []
    for index, colour in enumerate(["red", "green", "blue"]):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.new("RGB", (40, 80), colour).save(paths[-1])
    seen = _projection_dtypes(model)
    cpu = torch.device("cpu")
    options = {"batch_size": 2, "device": cpu, "desc": "x", "show_progress": False}
    low = image_outputs(model, paths, project=True, precision="bfloat16", **options)
    ids, mask = captions_of_varied_length(5, 8)
    texts = text_outputs(model, ids, mask, project=True, precision="bfloat16", **options)
    assert seen and set(seen) == {(torch.float32, torch.float32)}
    assert low.dtype == texts.dtype == torch.float32
    full = image_outputs(model, paths, project=True, precision="float32", **options)
    assert not torch.equal(low, full), "bfloat16 did run in the backbone"
    assert torch.allclose(low, full, atol=0.1, rtol=0.1)


def test_decoding_workers_share_the_cores_between_the_ranks_of_a_machine(monkeypatch):
    from timam.inference import embedding

    def cores(count: int) -> None:
        monkeypatch.setattr(embedding.os, "sched_getaffinity", lambda _: set(range(count)))

    cores(2)
    assert embedding.default_workers(1) == 1  # the 2-core machine: one worker beats none
    cores(1)
    assert embedding.default_workers(1) == 0
    cores(16)
    assert embedding.default_workers(1) == 8  # at most 8
    assert embedding.default_workers(4) == 3  # 4 ranks x (3 workers + 1 main process) = 16 cores
    assert embedding.default_workers(16) == 1  # never none while there are cores to spare
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert embedding.default_workers() == 1  # torchrun's ranks on this machine, by default
