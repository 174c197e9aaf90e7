"""Every figure of the project, built without pyplot: the shared style, and the ranking, training and
tuning figures."""
