"""File formats and atomic writing, free of Kedro: the bottom layer every other package may use.

Errors are plain ``OSError``/``ValueError``; the Kedro dataset classes in :mod:`timam.io` wrap them.
"""
