"""Queries against an image index: ``from timam.search import Searcher`` (no Kedro needed)."""

from timam.search.images import UnusableImageError
from timam.search.results import Hit, hits_table
from timam.search.searcher import Searcher

__all__ = ["Hit", "Searcher", "UnusableImageError", "hits_table"]
