"""A plain Python Philox4x32-10, checked against a Random123 known-answer vector in
test_rng_contract.py, for tests that need blocks the kernels' own stream can't give cheaply."""

MASK32 = 0xFFFFFFFF


def philox(counter, key):
    """The four 32-bit words of Philox4x32-10 of `counter` (4 words) under `key` (2 words)."""
    c, k = list(counter), list(key)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK32, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK32]
        k = [(k[0] + 0x9E3779B9) & MASK32, (k[1] + 0xBB67AE85) & MASK32]
    return c


def block(key, offset, b):
    """Block b of a fill with Philox key `key` and offset `offset` (unsigned 64-bit each)."""
    return philox((b & MASK32, b >> 32, offset & MASK32, offset >> 32), (key & MASK32, key >> 32))
