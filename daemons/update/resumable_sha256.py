"""A SHA-256 whose running state can be saved and restored, for resumable downloads.

A payload's hash covers every byte from the first; to resume a download after a restart
the engine must carry on from the state it had, not start over, and neither hashlib nor
cryptography can export a running hash. OpenSSL's ``SHA256_CTX`` is a plain struct (the
eight state words, the bit count, the pending block and its fill), so this hasher keeps
one in a buffer and drives libcrypto's SHA256_Init/Update/Final through ctypes, at
libcrypto's speed. The saved state is that struct's bytes, checked for size on restore.
update_engine keeps its hash the same way (OmahaHashCalculator::GetContext).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

#: sizeof(SHA256_CTX): h[8], Nl, Nh, data[16] as 32-bit words, then num and md_len.
CONTEXT_BYTES = (8 + 2 + 16 + 2) * 4


@functools.cache
def _libcrypto() -> ctypes.CDLL:
    name = ctypes.util.find_library("crypto")
    if name is None:
        raise OSError("libcrypto (OpenSSL) is not installed")
    lib = ctypes.CDLL(name)
    for function in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
        getattr(lib, function).restype = ctypes.c_int
    lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.SHA256_Init.argtypes = [ctypes.c_void_p]
    return lib


class ResumableSha256:
    """hashlib-like ``update``/``digest`` plus ``export`` and :meth:`restore`."""

    def __init__(self) -> None:
        self._context = ctypes.create_string_buffer(CONTEXT_BYTES)
        if _libcrypto().SHA256_Init(self._context) != 1:
            raise OSError("SHA256_Init failed")

    @classmethod
    def restore(cls, state: bytes) -> ResumableSha256:
        if len(state) != CONTEXT_BYTES:
            raise ValueError(f"a saved SHA-256 state is {CONTEXT_BYTES} bytes, not {len(state)}")
        hasher = cls()
        ctypes.memmove(hasher._context, state, CONTEXT_BYTES)
        return hasher

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Hash ``data`` in place: bytes and writable buffers (a payload's blobs) are not
        copied, since this runs over every byte of a download; a read-only view is."""
        size = memoryview(data).nbytes
        if not size:
            return
        if not isinstance(data, bytes):
            try:
                data = (ctypes.c_char * size).from_buffer(data)  # type: ignore[assignment]
            except TypeError:  # read-only and not bytes: one copy
                data = bytes(data)
        if _libcrypto().SHA256_Update(self._context, data, size) != 1:
            raise OSError("SHA256_Update failed")

    def export(self) -> bytes:
        return self._context.raw

    def digest(self) -> bytes:
        """The digest so far; the hasher itself carries on unchanged."""
        copy = ctypes.create_string_buffer(self._context.raw, CONTEXT_BYTES)
        out = ctypes.create_string_buffer(32)
        if _libcrypto().SHA256_Final(out, copy) != 1:
            raise OSError("SHA256_Final failed")
        return out.raw
