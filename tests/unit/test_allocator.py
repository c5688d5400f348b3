"""Keeping freed memory takes effect on glibc."""
import pytest


def test_keep_freed_memory_takes_effect_on_glibc():
    import ctypes
    import platform

    from posttrain import allocator
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt only")
    assert allocator.keep_freed_memory() is True and allocator._applied
    # a freed 64 MiB block is reused from the heap: touching it again costs no new page faults
    import resource
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 64 << 20

    def touch() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ptr = libc.malloc(size)
        ctypes.memset(ptr, 1, size)
        libc.free(ptr)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    touch()
    assert touch() < 100  # with glibc's defaults (mmap for a block this size): ~16,000 faults each time
