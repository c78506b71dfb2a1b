"""Name -> method class. Adding a method is one file plus one line here."""

from __future__ import annotations

from vlda.methods.adclip import ADCLIP
from vlda.methods.base import Method
from vlda.methods.cdan import CDAN
from vlda.methods.cmkd import CMKD
from vlda.methods.coop import CoOp
from vlda.methods.dann import DANN
from vlda.methods.dapl import DAPL
from vlda.methods.fixmatch import FixMatch
from vlda.methods.mcc import MCC
from vlda.methods.pga import MPGA, PGA
from vlda.methods.source_only import SourceOnly
from vlda.methods.zeroshot import ZeroShot

METHODS: dict[str, type[Method]] = {
    m.name: m
    for m in (ZeroShot, CoOp, DAPL, PGA, MPGA, ADCLIP, CMKD)
    + (SourceOnly, DANN, CDAN, MCC, FixMatch)  # classic baselines (image classifiers)
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None
