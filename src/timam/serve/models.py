"""The JSON the API answers, as pydantic models: ``/openapi.json`` describes them and FastAPI checks them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Target = Literal["images", "captions"]


class ErrorBody(BaseModel):
    """Every refusal (4xx, 503) and a bug (500): one sentence saying what to fix."""

    error: str


class HitOut(BaseModel):
    rank: int = Field(ge=1, description="1 = best")
    row: int = Field(ge=0, description="index row; its thumbnail is /thumb/<row>")
    path: str = Field(description="the indexed image file")
    score: float = Field(description="cosine similarity, rounded to 6 decimals")
    caption: str | None = Field(description="the row's caption (the ranked caption for target=captions)")
    thumb: str = Field(description="URL of the row's JPEG thumbnail")


class TextResults(BaseModel):
    query: str = Field(description="the query as searched (surrounding blanks removed)")
    k: int
    took_ms: float
    results: list[HitOut]


class ImageResults(BaseModel):
    target: Target
    k: int
    took_ms: float
    results: list[HitOut]


class LimitsOut(BaseModel):
    max_query_chars: int
    max_k: int
    default_k: int
    max_upload_bytes: int
    max_pixels: int


class Info(BaseModel):
    index: str
    index_version: str | None
    checkpoint_version: str | None
    images: int
    embedding_dim: int
    index_kind: str
    has_captions: bool
    created_at: str
    limits: LimitsOut
