"""The host driver's errors and the retry rules of a failed exchange (``docs/protocol.md`` §5.2).

Members
-------
DeviceError, DeviceTimeout, DeviceMismatch
    Errors; messages name the command and the reason (re-exported by :mod:`fxtrain.host.device`).
NotExecuted, Unanswered
    One attempt failed: the device said it did not execute the request, or no valid answer came (it may have).
IDEMPOTENT, NOT_EXECUTED
    The commands the driver may re-send after a lost or corrupted response, and the statuses that mean a request
    frame was mangled and not executed.
"""

from __future__ import annotations

from ..sim.wire import Command, Status

__all__ = ["DeviceError", "DeviceTimeout", "DeviceMismatch", "NotExecuted", "Unanswered", "IDEMPOTENT",
           "NOT_EXECUTED"]


class DeviceError(RuntimeError):
    pass


class DeviceTimeout(DeviceError):
    pass


class DeviceMismatch(DeviceError):
    pass


class NotExecuted(DeviceError):
    """One attempt failed and the device reported that it did not execute the request."""


class Unanswered(DeviceError):
    """One attempt got no valid answer: the device may or may not have executed the request."""


#: Commands the driver may re-send after a lost or corrupted response. Any command (RUN included) is re-sent
#: when the device answered a status of :data:`NOT_EXECUTED`; SOFT_RESET is never re-sent.
IDEMPOTENT = frozenset({Command.IDENTIFY, Command.WRITE_A, Command.WRITE_B, Command.SET_ROUNDING,
                        Command.SET_SEEDS, Command.READ_RESULT, Command.READ_COUNTERS, Command.EXPAND})


#: Statuses that mean the request frame was mangled on the way and not executed (the host only sends well-formed
#: frames). An answer with one of them is accepted whatever its CMD/SEQ echo (those may be the mangled bytes).
NOT_EXECUTED = frozenset({Status.CRC_ERROR, Status.TIMEOUT, Status.UNKNOWN_COMMAND, Status.BAD_LENGTH})
