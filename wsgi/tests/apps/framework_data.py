"""The bytes the framework apps stream, computed the same way by the tests."""

import hashlib

FIRST = b"first chunk\n"


def chunk(i):
    """Chunk i: 1000 + 37*i pseudo-random bytes (all 256 byte values occur), different per i."""
    size = 1000 + 37 * i
    out = b""
    block = hashlib.sha256(str(i).encode()).digest()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block).digest()
    return out[:size]
