"""Searchable image collections: embedding shards and the FAISS index that ranks them.

``faiss_index`` chooses and builds the FAISS index (exact inner product up to a size threshold, IVF
with product quantisation above it, parameters from the collection size and a memory budget);
``store`` holds an index with its manifest and row table on disk and searches it. Nothing here
imports Kedro, so a server or a notebook can open an index without a Kedro session.
"""
