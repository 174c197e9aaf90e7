"""`kedro run --pipelines tune`: an Optuna study of the training parameters (see nodes.py)."""
