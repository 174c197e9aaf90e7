"""Scoring a split for people: published protocols, the metrics record and report, recall curves,
example selection and the families table, on top of the ranking engine of :mod:`timam.retrieval`."""
