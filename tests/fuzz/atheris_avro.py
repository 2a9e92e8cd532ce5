"""Coverage-guided fuzzing of the Avro decoder and the record conversion (optional: ``make fuzz``).

    python tests/fuzz/atheris_avro.py -max_total_time=60 [corpus_dir]

The first byte picks a schema whose header is put in front of the rest (so the fuzzer reaches
the body decoders at once); every input must end as a DecodeError or BadRecord with a code,
or as a record that encodes again and converts to a domain message.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

try:
    import atheris
except ImportError:
    print("atheris is not installed (pip install atheris): skipping", file=sys.stderr)
    sys.exit(0)

with atheris.instrument_imports():
    from schemas.codec import MAGIC, Codec
    from schemas.errors import DecodeError
    from streams.records import BadRecord, to_command, to_saga_step

CODEC = Codec.default()
HEADERS = [MAGIC + CODEC.fingerprint_of(name) for name in CODEC.names]
DECODE_CODES = {"bad_magic", "unknown_schema", "truncated", "malformed"}


def test_one_input(data: bytes) -> None:
    if not data:
        return
    pick, body = data[0], data[1:]
    message = body if pick >= len(HEADERS) else HEADERS[pick] + body
    try:
        schema, record = CODEC.decode(message)
    except DecodeError as exc:
        if exc.code not in DECODE_CODES:
            raise
        return
    if CODEC.decode(CODEC.encode(schema, record)) != (schema, record):
        raise AssertionError(f"{schema} {record} does not round-trip")
    try:
        if schema == "SagaStep":
            to_saga_step(record)
        else:
            to_command(schema, record, 0)
    except BadRecord as exc:
        if not exc.code:
            raise


def _seeds() -> list[bytes]:
    """One valid record of every schema, behind its pick byte."""
    seeds = []
    for pick, name in enumerate(CODEC.names):
        schema = CODEC.schema(name)
        record = {}
        for f in schema["fields"]:
            t = f["type"]
            t = t["type"] if isinstance(t, dict) else t
            if isinstance(t, list):
                record[f["name"]] = None
            elif t == "array":
                items = f["type"]["items"]
                item_type = items["type"] if isinstance(items, dict) else items
                record[f["name"]] = [1] if item_type == "long" else ["x"]
            elif t == "long":
                record[f["name"]] = 1
            elif t == "bytes":
                record[f["name"]] = b"\x00"
            else:
                record[f["name"]] = {"amount": "1.00", "currency": "USD", "step": "credit"}.get(
                    f["name"], "acct-1"
                )
        seeds.append(bytes([pick]) + CODEC.encode(name, record)[len(HEADERS[pick]) :])
    return seeds


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):  # no corpus given: start from seeds
        import tempfile

        corpus = Path(tempfile.mkdtemp(prefix="paystream-fuzz-avro-"))
        for i, seed in enumerate(_seeds()):
            (corpus / f"seed-{i}").write_bytes(seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
