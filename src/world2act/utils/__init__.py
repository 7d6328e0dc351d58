"""Shared utilities: atomic file writes, manifests, seeding, config overrides, logging."""
