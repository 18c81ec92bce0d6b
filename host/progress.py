"""Progress bar of a training epoch, through ``tqdm`` (the ``[train]`` extra).

Members
-------
EpochProgress
    One bar per epoch on stderr, with the running loss; silent when disabled or when stderr is not a terminal.
"""

from __future__ import annotations

import sys

__all__ = ["EpochProgress"]


class EpochProgress:
    """A ``tqdm`` bar over ``total`` batches labelled ``label``; a context manager.

    Parameters
    ----------
    enabled : bool
        False (``--no-progress``) shows nothing; so does a stderr that is not a terminal (logs, CI, pipes).
    total : int
    label : str
    stream
        Where the bar goes (default ``sys.stderr``).
    """

    def __init__(self, enabled: bool, total: int, label: str, stream=None):
        stream = sys.stderr if stream is None else stream
        self.enabled = bool(enabled) and total > 0 and stream.isatty()
        self._bar = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="batch", file=stream, leave=True, mininterval=0.2)

    def update(self, done: int, loss: float) -> None:
        """``done`` batches finished, mean loss so far ``loss``."""
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
