"""The families table: pairwise, adversarial, interaction and two-stage retrieval on the same data."""
