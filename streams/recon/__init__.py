"""Reconciliation's pure core (docs/recon.md): a PSP's settlement file parsed and checked, and
every line compared with our side (payment orders, ledger postings), each difference put in a
category with its resolution: automatic where the fix is certain, else a review item."""

from .match import reconcile
from .parse import parse_file

__all__ = ["parse_file", "reconcile"]
