"""`kedro run --pipelines zero_shot`: evaluate a pretrained dual encoder that no run trained."""
