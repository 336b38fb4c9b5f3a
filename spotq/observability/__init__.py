"""Metrics, logs and the probe server: what operators see of spotq."""
