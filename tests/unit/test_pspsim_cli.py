"""The command line: NAME=PORT / NAME=URL pairs, and the offline settlement file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pspsim.cli import main, psp_port, psp_url, serve_parser
from pspsim.engine import PspEngine
from pspsim.psps import DEFAULT_PSPS
from pspsim.store import Store


def test_pairs() -> None:
    assert psp_port("cardco=0") == ("cardco", 0)
    assert psp_port("bankco=8092") == ("bankco", 8092)
    assert psp_url("bankco=http://127.0.0.1:9/h") == ("bankco", "http://127.0.0.1:9/h")
    for bad in ("cardco", "cardco=", "=1", "visa=1", "cardco=-1", "cardco=65536", "cardco=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            psp_port(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        psp_url("bankco=ftp://x")


def test_serve_flags_and_defaults() -> None:
    args = serve_parser().parse_args(["--state-dir", "d", "--psp", "cardco=0", "--seed", "5"])
    assert (args.psp, args.seed, args.hang_s, args.latency_ms) == ([("cardco", 0)], 5, 30.0, 0)
    with pytest.raises(SystemExit):
        serve_parser().parse_args(["--psp", "cardco=0"])  # --state-dir is required


def test_settlement_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = PspEngine(DEFAULT_PSPS["walletco"], Store(tmp_path / "pspsim.sqlite3"))
    body = {"merchant_reference": "po-1", "direction": "pay_in", "amount": "10.00",
            "currency": "GBP", "payment_option": "paypal", "instrument": "paypal_ok@example.com"}  # fmt: skip
    token = str(engine.create_token(body)[1]["token"])
    engine.execute(token)
    day = str(engine.get(token).completed_at)[:10]
    args = ["settlement", "--state-dir", str(tmp_path), "--psp", "walletco", "--date", day]

    assert main(args) == 0
    csv_text = capsys.readouterr().out
    assert csv_text.splitlines()[1].split(",")[3] == "po-1"
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["Type"] for r in rows] == ["Settled", "Fee", "MerchantPayout"]
    assert rows[0]["Commission (NC)"] == "0.69"  # 3.4% of 10.00 + 0.35
    out = tmp_path / "f.csv"
    assert main([*args, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 3
    assert out.read_text() == csv_text
    assert main(["settlement", "--state-dir", str(tmp_path / "none"), "--psp", "walletco",
                 "--date", day]) == 1  # fmt: skip
