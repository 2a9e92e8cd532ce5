"""HTTP bodies as ClickHouse sends and reads them: content types and content encodings."""

from __future__ import annotations

import zlib
from collections.abc import Callable

TRUE = frozenset({"1", "true", "True", "TRUE"})
MIN_COMPRESS_BYTES = 1024


def content_type(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        header = "present" if "withnames" in f else "absent"
        return f"text/csv; charset=UTF-8; header={header}"
    if "eachrow" in f or f in ("jsonlines", "ndjson"):
        return "application/x-ndjson; charset=UTF-8"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f == "xml":
        return "application/xml; charset=UTF-8"
    if f.startswith(("pretty", "vertical", "markdown", "values", "template", "raw", "linea")):
        return "text/plain; charset=UTF-8"
    if f.startswith(
        ("native", "rowbinary", "parquet", "arrow", "orc", "avro", "protobuf")
    ) or f in (
        "msgpack",
        "capnproto",
        "npy",
        "bsoneachrow",
    ):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def _codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]]:
    """Content-Encodings we can produce and read: name -> (compress, bounded decompress)."""

    def zlib_codec(wbits: int) -> tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]:
        def compress(data: bytes) -> bytes:
            c = zlib.compressobj(3, zlib.DEFLATED, wbits)  # ClickHouse's default level is 3
            return c.compress(data) + c.flush()

        def decompress(data: bytes, limit: int) -> bytes:
            return zlib.decompressobj(wbits).decompress(data, limit + 1)

        return compress, decompress

    out = {"gzip": zlib_codec(31), "deflate": zlib_codec(15)}
    try:
        import lz4.frame as lz4f  # type: ignore[import-untyped,unused-ignore]

        out["lz4"] = (
            lz4f.compress,
            lambda data, limit: lz4f.LZ4FrameDecompressor().decompress(data, max_length=limit + 1),
        )
    except ImportError:
        pass
    try:
        from backports import zstd  # type: ignore[import-not-found,unused-ignore]

        out["zstd"] = (
            zstd.compress,
            lambda data, limit: zstd.ZstdDecompressor().decompress(data, max_length=limit + 1),
        )
    except ImportError:
        pass
    return out


CODECS = _codecs()
# Cheapest first: the front is on loopback, where CPU costs more than bytes.
_ENCODING_PREFERENCE = [e for e in ("lz4", "zstd", "gzip", "deflate") if e in CODECS]


def pick_encoding(accept: str) -> str | None:
    offered = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return next((e for e in _ENCODING_PREFERENCE if e in offered), None)
