"""Size classes: the table, the size -> class map and a self-check run at import."""
from hakmem.classes cimport (HAK_NCLASSES, HAK_TINY_MAX, HAK_ALIGN, HAK_CANARY, HAK_DEBUG,
                             hak_block_size, hak_size_class, hak_stride)

NCLASSES = HAK_NCLASSES
TINY_MAX = HAK_TINY_MAX
ALIGNMENT = HAK_ALIGN


def block_sizes():
    """Usable size of each class, C0 first."""
    return [hak_block_size(c) for c in range(HAK_NCLASSES)]


def size_class(size_t n):
    """Class index serving a request of ``n`` bytes; ValueError above the tiny range."""
    if n > HAK_TINY_MAX:
        raise ValueError(f"{n} bytes is above the tiny range ({HAK_TINY_MAX})")
    return hak_size_class(n)


def stride(int c):
    """Bytes between two blocks of class ``c`` in a slab (block size + debug canary)."""
    if not 0 <= c < HAK_NCLASSES:
        raise ValueError(f"class {c} out of range 0..{HAK_NCLASSES - 1}")
    return hak_stride(c)


def self_check():
    """Verify the table: increasing, 16-byte multiples, smallest class that fits."""
    prev = 0
    for c in range(HAK_NCLASSES):
        b = hak_block_size(c)
        if b <= prev or b % HAK_ALIGN:
            raise AssertionError(f"class {c}: bad block size {b}")
        prev = b
    if prev != HAK_TINY_MAX:
        raise AssertionError("largest class must equal the tiny maximum")
    for n in range(HAK_TINY_MAX + 1):
        c = hak_size_class(n)
        if hak_block_size(c) < n or (c > 0 and hak_block_size(c - 1) >= n):
            raise AssertionError(f"size {n} maps to class {c}, not the smallest fit")


self_check()

DEBUG = bool(HAK_DEBUG)
CANARY = HAK_CANARY
