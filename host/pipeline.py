"""Requests in flight on a link: the host side of the pipelining rule of ``docs/protocol.md`` §2.2.

The device answers requests in the order it receives them and buffers ``rx_buffer`` request bytes (reported by
IDENTIFY). A request's bytes have all left that buffer before its response starts, so a host that keeps the
bytes of the requests it has not yet seen answered at or below ``rx_buffer`` never makes the device drop a byte,
however long the device computes or answers. :class:`Pipeline` keeps that rule, matches each response to the
oldest request in flight by CMD and SEQ, and stops at the first response that is missing, corrupted, out of
order or not OK by raising :class:`LinkFault` (the caller then knows which requests were answered and must
treat the device's state after them as unknown).

Members
-------
LinkFault
    A pipelined exchange failed; ``why`` says how.
Pipeline
    ``send(cmd, payload, expect_len, on_ok)``, ``send_entries(config, which, addr, entries)``, ``receive()``,
    ``flush()``, ``in_flight``.
MAX_IN_FLIGHT : int
    Requests in flight at most (half the 8-bit SEQ space, so a SEQ names one request).
"""

from __future__ import annotations

import time
from collections import deque

from ..sim.payloads import WRITE_HEADER, pack_values, value_bytes, write_frames
from ..sim.wire import Command, ResponseParser, Status, encode_request

__all__ = ["LinkFault", "Pipeline", "MAX_IN_FLIGHT"]

MAX_IN_FLIGHT = 128


class LinkFault(Exception):
    """A pipelined exchange failed (lost, corrupted, out of order or not-OK response)."""

    def __init__(self, why):
        super().__init__(why)
        self.why = why


class Pipeline:
    """Sends requests without waiting, within ``window`` bytes in flight (module docstring).

    Parameters
    ----------
    transport : fxtrain.host.transport.Transport
    window : int
        Request bytes allowed in flight (the device's ``rx_buffer``).
    timeout : float
        Seconds to wait for the oldest response beyond the wire time of what is in flight.
    wire_time : callable
        Seconds the link needs for a number of bytes.
    counters : dict
        The driver's counters (``bytes_sent``, ``payload_sent``, ``frames``, ``bytes_received``,
        ``payload_received`` are incremented).
    next_seq : callable
        The next SEQ to use.

    Members
    -------
    in_flight : int
        Requests sent and not answered yet.
    send, send_entries, receive, flush
    """

    def __init__(self, transport, window, timeout, wire_time, counters, next_seq):
        self.transport = transport
        self.window = int(window)
        self.timeout = timeout
        self.wire_time = wire_time
        self.counters = counters
        self.next_seq = next_seq
        self._parser = ResponseParser()
        self._ready = deque()
        self._flight = deque()          # (cmd, seq, frame bytes, expect_len, on_ok)
        self._bytes = 0

    @property
    def in_flight(self):
        return len(self._flight)

    def send_entries(self, config, which, addr, entries):
        """Send operand entries (``which`` ``"A"`` or ``"B"``, an ``n x width`` array) from ``addr`` on as WRITE_A /
        WRITE_B frames cut to fit the window (``sim.payloads.write_frames``)."""
        cmd = Command.WRITE_A if which == "A" else Command.WRITE_B
        vb = value_bytes(config)
        for start, count in write_frames(config, which, len(entries), self.window):
            self.send(cmd, WRITE_HEADER.pack(addr + start, count) + pack_values(entries[start:start + count], vb))

    def send(self, cmd, payload=b"", expect_len=0, on_ok=None):
        """Send a request once the window has room; ``on_ok(payload)`` runs when its OK answer arrives."""
        cmd = Command(cmd)
        frame = encode_request(cmd, self.next_seq(), payload)
        if len(frame) > self.window:
            raise ValueError(f"A {len(frame)}-byte {cmd.name} frame does not fit the device's {self.window}-byte "
                             f"receive buffer")
        while self._flight and (self._bytes + len(frame) > self.window or len(self._flight) >= MAX_IN_FLIGHT):
            self.receive()
        self.transport.write(frame)
        self.counters["bytes_sent"] += len(frame)
        self.counters["payload_sent"] += len(payload)
        self.counters["frames"] += 1
        self._flight.append((cmd, frame[2], len(frame), expect_len, on_ok))
        self._bytes += len(frame)

    def _next_response(self, deadline):
        while not self._ready:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self.transport.read(min(left, 0.5))
            self.counters["bytes_received"] += len(data)
            self._ready.extend(self._parser.feed(data))
        return self._ready.popleft()

    def receive(self):
        """Wait for the answer to the oldest request in flight; :class:`LinkFault` unless it is its OK answer."""
        cmd, seq, nbytes, expect_len, on_ok = self._flight[0]
        deadline = time.monotonic() + self.timeout + self.wire_time(self._bytes + expect_len)
        response = self._next_response(deadline)
        if response is None:
            raise LinkFault(f"no answer to {cmd.name} within {self.timeout} s (+ wire time)")
        if not response.crc_ok:
            raise LinkFault(f"the answer to {cmd.name} failed its CRC")
        if (response.cmd, response.seq) != (cmd, seq):
            raise LinkFault(f"expected the answer to {cmd.name} (SEQ {seq}), got CMD 0x{response.cmd:02x} "
                            f"SEQ {response.seq}")
        if response.status != Status.OK:
            try:
                name = Status(response.status).name
            except ValueError:
                name = f"unknown status 0x{response.status:02x}"
            raise LinkFault(f"the device answered {cmd.name} with {name}")
        if len(response.payload) != expect_len:
            raise LinkFault(f"{cmd.name} answer has {len(response.payload)} payload bytes, expected {expect_len}")
        self._flight.popleft()
        self._bytes -= nbytes
        self.counters["payload_received"] += len(response.payload)
        if on_ok is not None:
            on_ok(response.payload)

    def flush(self):
        """Wait until every request in flight is answered."""
        while self._flight:
            self.receive()
