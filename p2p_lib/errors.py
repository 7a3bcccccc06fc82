"""The error every model-file reader raises (hand-written plumbing): defined on its own so that
`checkpoint` (our files) and `official` (the official repository's files) can both raise it while
importing each other in one direction only (checkpoint -> official)."""

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, truncated, unsafe, or not for this network."""
