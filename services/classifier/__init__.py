"""Classifier: tags every inbound DM with language, sentiment, category and priority."""
