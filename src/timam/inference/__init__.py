"""Inference-time building blocks shared by training, evaluation, search and the readers.

Devices and their speed settings, image decoding and transforms, one split of the caption table
as index arrays, and batched forward passes that embed a split.
"""
