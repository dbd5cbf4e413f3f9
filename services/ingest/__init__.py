"""Ingest: the front door. Receives DMs over HTTP, normalises them and publishes them to NATS."""
