"""Ctrl-C that always stops a run.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. When
that is inside a finaliser (an object's `__del__` or a weakref callback, run by the garbage
collector, e.g. while a checkpoint is serialised), Python prints "Exception ignored in ..." and
carries on, so the interrupt is lost and the run trains to the end. The handler here remembers
the signal as well as raising it, and the next batch boundary raises it again.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from lightning.pytorch.callbacks import Callback


class CtrlC(Callback):
    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def install(self) -> None:
        """Handle SIGINT while the run is open (main thread only: Python's rule for signals)."""
        if threading.current_thread() is threading.main_thread() and self._previous is None:
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame) -> None:
        self.pressed = True
        if callable(self._previous) and self._previous is not signal.default_int_handler:
            self._previous(signum, frame)
        raise KeyboardInterrupt

    def check(self, *args: Any, **kwargs: Any) -> None:
        if self.pressed:
            raise KeyboardInterrupt("Ctrl-C (raised again: it first landed where Python "
                                    "ignores exceptions)")

    on_train_batch_start = on_train_batch_end = check
    on_validation_batch_start = on_test_batch_start = check
