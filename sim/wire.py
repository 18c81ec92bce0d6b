"""Wire codec of the host link (``docs/protocol.md`` §2): start bytes, command and status codes, CRC-16, request
and response frames, and the host's incremental response parser.

What a frame *carries* (payload layouts, operand entries, the IDENTIFY record) is :mod:`.payloads`; the device
that answers frames is :class:`.protocol.ProtocolEmulator`.

Frames (all multi-byte fields little-endian)::

    request  : 0xA5 | CMD | SEQ | LEN_LO LEN_HI | PAYLOAD[LEN] | CRC_LO CRC_HI
    response : 0x5A | CMD | SEQ | STATUS | LEN_LO LEN_HI | PAYLOAD[LEN] | CRC_LO CRC_HI

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR; check value
0x29B1 for ``b"123456789"``) over every byte after the start byte up to the end of the payload.

Members
-------
REQUEST_SOF, RESPONSE_SOF : int
    Start bytes.
REQUEST_HEADER_BYTES, RESPONSE_HEADER_BYTES, CRC_BYTES, MAX_LENGTH : int
    Frame overheads and the largest LEN.
Command, Status : IntEnum
    Command and status codes.
crc16, crc16_update, CRC_INIT, CRC_POLY
    CRC-16/CCITT-FALSE of a byte string; the byte-wise table step that defines it.
encode_request, encode_response
    Whole frames as bytes.
request_frame_bytes, response_frame_bytes
    Bytes on the wire of a frame with a given payload length.
Response, ResponseParser
    Incremental parser of response frames (host side).
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["REQUEST_SOF", "RESPONSE_SOF", "REQUEST_HEADER_BYTES", "RESPONSE_HEADER_BYTES", "CRC_BYTES",
           "MAX_LENGTH", "Command", "Status", "CRC_INIT", "CRC_POLY", "crc16", "crc16_update", "encode_request",
           "encode_response", "request_frame_bytes", "response_frame_bytes", "Response", "ResponseParser"]

REQUEST_SOF = 0xA5
RESPONSE_SOF = 0x5A
REQUEST_HEADER_BYTES = 5     # SOF CMD SEQ LEN LEN
RESPONSE_HEADER_BYTES = 6    # SOF CMD SEQ STATUS LEN LEN
CRC_BYTES = 2
MAX_LENGTH = 0xFFFF


class Command(enum.IntEnum):
    IDENTIFY = 0x01
    WRITE_A = 0x02
    WRITE_B = 0x03
    SET_ROUNDING = 0x04
    SET_SEEDS = 0x05
    RUN = 0x06
    READ_RESULT = 0x07
    READ_COUNTERS = 0x08
    SOFT_RESET = 0x09
    RUN_TILES = 0x0A
    EXPAND = 0x0B


class Status(enum.IntEnum):
    OK = 0x00
    CRC_ERROR = 0x01
    UNKNOWN_COMMAND = 0x02
    BAD_LENGTH = 0x03
    BAD_ARGUMENT = 0x04
    TIMEOUT = 0x05


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()
CRC_INIT = 0xFFFF
CRC_POLY = 0x1021


def crc16_update(crc, byte):
    """One byte of CRC-16/CCITT-FALSE (MSB first)."""
    return ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]


def crc16(data, crc=CRC_INIT):
    """CRC-16/CCITT-FALSE of ``data``: poly 0x1021, init 0xFFFF, not reflected, no final XOR.

    Computed by ``binascii.crc_hqx`` (the same polynomial, unreflected, with the initial value passed in);
    :func:`crc16_update` is the byte-wise table definition it is tested against."""
    return binascii.crc_hqx(bytes(data), crc)


def _check_byte(name, value):
    if not isinstance(value, (int, np.integer)) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte 0..255, not {value!r}")
    return int(value)


def encode_request(cmd, seq, payload=b""):
    """A request frame: ``0xA5 CMD SEQ LEN16 PAYLOAD CRC16`` (CRC over CMD..PAYLOAD)."""
    payload = bytes(payload)
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"Payload of {len(payload)} bytes exceeds the frame maximum {MAX_LENGTH}")
    body = bytes([_check_byte("Command", cmd), _check_byte("Sequence number", seq)]) + \
        struct.pack("<H", len(payload)) + payload
    return bytes([REQUEST_SOF]) + body + struct.pack("<H", crc16(body))


def encode_response(cmd, seq, status, payload=b""):
    """A response frame: ``0x5A CMD SEQ STATUS LEN16 PAYLOAD CRC16`` (CRC over CMD..PAYLOAD)."""
    payload = bytes(payload)
    body = bytes([cmd & 0xFF, seq & 0xFF, int(status) & 0xFF]) + struct.pack("<H", len(payload)) + payload
    return bytes([RESPONSE_SOF]) + body + struct.pack("<H", crc16(body))


def request_frame_bytes(payload):
    """Bytes on the wire of a request frame with ``payload`` payload bytes (:func:`encode_request`)."""
    return REQUEST_HEADER_BYTES + int(payload) + CRC_BYTES


def response_frame_bytes(payload):
    """Bytes on the wire of a response frame with ``payload`` payload bytes (:func:`encode_response`)."""
    return RESPONSE_HEADER_BYTES + int(payload) + CRC_BYTES


@dataclass
class Response:
    cmd: int
    seq: int
    status: int
    payload: bytes
    crc_ok: bool


class ResponseParser:
    """Incremental host-side parser: feed bytes, collect complete :class:`Response` objects.

    Bytes before a start byte are skipped (and counted in ``skipped``); a frame whose CRC fails is still returned,
    with ``crc_ok=False``, so the host can retry.
    """

    def __init__(self):
        self._buf = bytearray()
        self.skipped = 0

    def feed(self, data):
        self._buf += data
        out = []
        while True:
            start = self._buf.find(bytes([RESPONSE_SOF]))
            if start < 0:
                self.skipped += len(self._buf)
                self._buf.clear()
                return out
            if start:
                self.skipped += start
                del self._buf[:start]
            if len(self._buf) < RESPONSE_HEADER_BYTES:
                return out
            length = self._buf[4] | (self._buf[5] << 8)
            total = RESPONSE_HEADER_BYTES + length + CRC_BYTES
            if len(self._buf) < total:
                return out
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            crc_ok = crc16(frame[1:-2]) == (frame[-2] | (frame[-1] << 8))
            out.append(Response(frame[1], frame[2], frame[3], frame[RESPONSE_HEADER_BYTES:-2], crc_ok))

    @property
    def pending(self):
        return len(self._buf)
