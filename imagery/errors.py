"""User-facing errors: one clear line naming the file or parameter and what was expected."""


class VigiaError(Exception):
    """An input or setting problem the user can fix; printed as one line, never a traceback."""


class InputError(VigiaError):
    """A scene, AOI or raster given by the user is missing, unreadable or inconsistent."""


class SourceError(VigiaError):
    """A scene source (catalogue or download service) failed permanently."""
