"""A small, valid JPEG that takes a decoder a long time: the sandbox's "slow_decode" fault and
the tests of the crawl's preparation deadline share it.

A progressive JPEG may send any number of scans, and a decoder walks every block of the image
for each of them. An AC scan whose blocks are all empty is a few end-of-band runs (up to 32,767
blocks in 15 bits), so a greyscale image of a few megapixels costs ~30 bytes a scan to send and
milliseconds to decode; thousands of scans make a file of a few hundred kB that holds a core
for many seconds. Every scan refines coefficients with Ah=0, Al=0, which the progression rules
allow again and again: libjpeg warns about nothing, so a strict decoder (simplejpeg) reads it
all just as Pillow does. The pixels are flat grey, under any pixel limit we set.
"""
from __future__ import annotations

import functools
import struct

MAX_EOBRUN = 32767  # the longest end-of-band run one symbol can say (EOB14 + 14 bits)


class _Bits:
    """Entropy-coded bits, MSB first, with JPEG's byte stuffing (0xFF is followed by 0x00)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc, self.n = 0, 0

    def put(self, value: int, length: int) -> None:
        self.acc, self.n = (self.acc << length) | value, self.n + length
        while self.n >= 8:
            self.n -= 8
            byte = (self.acc >> self.n) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)
        self.acc &= (1 << self.n) - 1

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with 1 bits
        return bytes(self.out)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _huffman_one_symbol(table_class: int, symbol: int) -> bytes:
    """A DHT segment for table 0 of `table_class` (0 DC, 1 AC) whose only code is '0' -> symbol."""
    counts = bytes([1] + [0] * 15)
    return _segment(0xC4, bytes([table_class << 4]) + counts + bytes([symbol]))


def _scan(ss: int, se: int, data: bytes) -> bytes:
    """SOS for the one component, spectral band ss..se, Ah=0 Al=0, then its entropy data."""
    return _segment(0xDA, bytes([1, 1, 0x00, ss, se, 0x00])) + data


def _empty_bands(blocks: int) -> bytes:
    """Entropy data of an AC scan whose `blocks` blocks are all empty: end-of-band runs of
    16,384..32,767 blocks each (the symbol EOB14, coded '0', then 14 bits)."""
    runs = -(-blocks // MAX_EOBRUN)
    bits = _Bits()
    for i in range(runs):
        run = blocks // runs + (i < blocks % runs)
        bits.put(0, 1)
        bits.put(run - (1 << 14), 14)
    return bits.flush()


@functools.cache
def slow_jpeg(side: int = 4096, scans: int = 8000) -> bytes:
    """A side x side greyscale progressive JPEG: one DC scan, then `scans` empty AC scans.
    side >= 1024, so that every end-of-band run fits EOB14."""
    blocks = (-(-side // 8)) ** 2
    if blocks < 1 << 14:
        raise ValueError("side must be at least 1024")
    dc = _Bits()
    for _ in range(blocks):  # every DC difference is 0: category 0, coded '0'
        dc.put(0, 1)
    ac_scan = _scan(1, 63, _empty_bands(blocks))
    return b"".join([
        b"\xff\xd8",
        _segment(0xDB, bytes([0]) + bytes([1] * 64)),                         # quantisation: all 1
        _segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + bytes([1, 0x11, 0])),  # SOF2, 1 component
        _huffman_one_symbol(0, 0x00),                                         # DC: category 0
        _huffman_one_symbol(1, 0xE0),                                         # AC: EOB14
        _scan(0, 0, dc.flush()),
        ac_scan * scans,
        b"\xff\xd9",
    ])
