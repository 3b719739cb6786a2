"""Vigía imagery library: Sentinel-2 change detection from scenes to published layers."""

__version__ = "0.1.0"
