"""Prefect flows: thin tasks around `imagery` calls."""
