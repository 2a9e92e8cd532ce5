"""Coverage-guided fuzzing of the JSON command parser with atheris (optional: ``make fuzz``).

    python tests/fuzz/atheris_commands.py -max_total_time=60 [corpus_dir]

Every input must end as a Command that survives Avro and the record conversion, or as an
InvalidCommand with a known code. Anything else is a crash that atheris reports (with the
input that caused it). Exits 0 with a note when atheris is not installed.
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
    from producers.commands import parse_line
    from producers.errors import CODES, InvalidCommand
    from schemas.codec import Codec
    from streams.records import BadRecord, to_command

CODEC = Codec.default()


def test_one_input(data: bytes) -> None:
    try:
        cmd = parse_line(data)
    except InvalidCommand as exc:
        if exc.code not in CODES or not exc.message:
            raise AssertionError(f"bad rejection {exc!r}") from exc
        return
    encoded = CODEC.encode(cmd.schema, cmd.record)
    schema, record = CODEC.decode(encoded)
    if (schema, record) != (cmd.schema, dict(cmd.record)):
        raise AssertionError(f"round trip changed {cmd} into {schema} {record}")
    try:
        to_command(schema, record, 0)
    except BadRecord as exc:
        if exc.code != "reserved_key":
            raise


SEEDS = [
    b'{"type":"open_account","command_id":"c1","account":"acct-1","user":"user-1","currency":"USD"}',
    b'{"type":"deposit","command_id":"c2","account":"acct-1","amount":"100.00"}',
    b'{"type":"withdraw","command_id":"c3","account":"acct-1","amount":"10.00"}',
    b'{"type":"transfer","command_id":"c4","from":"acct-1","to":"acct-2","amount":"5.25"}',
    b'{"type":"block_account","command_id":"c5","account":"acct-2","reason":"court order"}',
    b'{"type":"unblock_account","command_id":"c6","account":"acct-2","reason":null}',
    b'{"type":"relate_accounts","command_id":"c7","account":"a","related":"b","kind":"family"}',
    b'{"type":"unrelate_accounts","command_id":"c8","account":"acct-1","related":"acct-2"}',
    b'{"type":"deposit","command_id":"\\u0000","account":"\\ud800","amount":1e309}',
]


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):  # no corpus given: start from seeds
        import tempfile

        corpus = Path(tempfile.mkdtemp(prefix="paystream-fuzz-commands-"))
        for i, seed in enumerate(SEEDS):
            (corpus / f"seed-{i}").write_bytes(seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
