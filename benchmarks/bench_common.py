"""Pieces shared by the benchmark scripts: an Office-Home-like task and a random feature bank."""

from __future__ import annotations

import numpy as np
import torch

from vlda.data.catalog import OFFICEHOME_CLASSES
from vlda.data.feature_cache import FeatureSet
from vlda.methods.base import Task


def make_task(n_classes: int) -> Task:
    """An Office-Home-like task (art -> real world) with ``n_classes`` classes."""
    names = [
        OFFICEHOME_CLASSES[i % len(OFFICEHOME_CLASSES)]
        + ("" if i < len(OFFICEHOME_CLASSES) else f"_{i // len(OFFICEHOME_CLASSES)}")
        for i in range(n_classes)
    ]
    return Task(
        classnames=tuple(names),
        prompt_names=tuple(n.replace("_", " ").lower() for n in names),
        source_domains=("art",),
        target_domain="real_world",
    )


def make_bank(n: int, n_views: int, dim: int, n_classes: int, seed: int) -> FeatureSet:
    """A FeatureSet like the cache returns (fp16 ``[N, 1 + K, D]``), in memory, random."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, 1 + n_views, dim), dtype=np.float32).astype(np.float16)
    return FeatureSet(
        features=feats,
        labels=torch.from_numpy(rng.integers(0, n_classes, n)),
        valid=torch.ones(n, dtype=torch.bool),
        paths=[f"img{i}.jpg" for i in range(n)],
        key="benchmark",
    )


def provenance(script: str, argv: list[str] | None) -> dict:
    """Where a result comes from: the library versions, the machine, the command and the date."""
    import platform
    import shlex
    import sys
    from datetime import datetime, timezone

    return {
        "env": {"torch": torch.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "processor": platform.processor() or None},
        "command": f"python benchmarks/{script} " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(result: dict, out, table: str) -> None:
    """Write ``result`` as JSON to ``out`` (a Path) and print its table."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table)
    print(f"wrote {out}")


class TimedSetting:
    """One benchmark setting: subclasses implement :meth:`step`; :meth:`run` times ``steps``
    of them after ``warmup`` untimed ones (CUDA synchronised) and keeps each round's rate."""

    device: torch.device
    rates: list[float]

    def step(self) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, warmup: int, steps: int) -> float:
        import time

        for _ in range(warmup):
            self.step()
        self.sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        rate = steps / (time.perf_counter() - start)
        self.rates.append(rate)
        return rate
