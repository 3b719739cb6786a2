"""Scene sources: one module per source behind the `SceneSource` protocol."""

from imagery.sources.base import Scene, SceneSource
from imagery.sources.local import LocalSource, open_scene

__all__ = ["LocalSource", "Scene", "SceneSource", "open_scene"]
