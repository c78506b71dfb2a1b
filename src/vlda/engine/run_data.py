"""The domains of a run, read from disk (paths and labels, no pixels yet), with their splits.

A benchmark declares its splits: unless the config names them, sources and the target train on
the benchmark's ``train_split`` and the target is scored on its ``test_split`` (DomainNet:
``train`` / ``test``; Office-Home, VisDA, ...: ``all`` and ``all``, the transductive protocol).
A bring-your-own dataset (``data.custom``) has one split, ``all``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlda.config import ConfigError, RunConfig
from vlda.data.benchmarks import get_benchmark
from vlda.data.custom import load_custom_domains
from vlda.data.readers import DomainData, load_domain
from vlda.methods.base import Task


@dataclass
class RunData:
    """Attributes: the task; the source domains; the target as adapted on (``target``) and as
    scored (``target_eval``, the same object when the splits agree); the headline metric; the
    splits used (``{"source", "target", "eval"}``)."""

    task: Task
    sources: list[DomainData]
    target: DomainData
    target_eval: DomainData
    metric: str
    splits: dict[str, str]


def resolve_splits(cfg: RunConfig) -> dict[str, str]:
    """``{"source", "target", "eval"}``: the config's splits, or the benchmark's defaults."""
    d = cfg.data
    if d.custom is not None:
        for key in ("source_split", "target_split", "eval_split"):
            if getattr(d, key) not in (None, "all"):
                raise ConfigError(f"data.{key}: a custom dataset has only the split 'all'")
        return {"source": "all", "target": "all", "eval": "all"}
    bench = get_benchmark(str(d.benchmark))
    return {
        "source": d.source_split or bench.train_split,
        "target": d.target_split or bench.train_split,
        "eval": d.eval_split or bench.test_split,
    }


def load_run_data(cfg: RunConfig) -> RunData:
    """Read the source, target and target-evaluation domains named in ``cfg.data``."""
    d = cfg.data
    splits = resolve_splits(cfg)
    if d.custom is not None:
        domains = load_custom_domains(d.custom)
        missing = [x for x in [*d.source, d.target] if x not in domains]
        if missing:
            raise ConfigError(f"data.custom has no domain(s) {missing}; it has {sorted(domains)}")
        sources = [domains[s] for s in d.source]
        target = target_eval = domains[d.target]
        metric = "accuracy"
    else:
        if not d.root:
            raise ConfigError(f"data.root: where is {d.benchmark} on disk? (data.root=/path/to/it)")
        bench = get_benchmark(str(d.benchmark))
        for name in [*d.source, d.target]:
            if name not in bench.domains:
                raise ConfigError(f"{bench.id} has no domain {name!r}; its domains: {list(bench.domains)}")
        sources = [load_domain(bench, s, d.root, splits["source"]) for s in d.source]
        target = load_domain(bench, d.target, d.root, splits["target"])
        same = splits["eval"] == splits["target"]
        target_eval = target if same else load_domain(bench, d.target, d.root, splits["eval"])
        metric = bench.metric
    return RunData(_task(sources, target, target_eval), sources, target, target_eval, metric, splits)


def _task(sources: list[DomainData], target: DomainData, target_eval: DomainData) -> Task:
    first = sources[0]
    for dom in [*sources[1:], target, target_eval]:
        if tuple(dom.classnames) != tuple(first.classnames):
            raise ConfigError(f"domain {dom.name!r} has a different class list than {first.name!r}")
    return Task(
        classnames=tuple(first.classnames),
        prompt_names=tuple(first.prompt_names),
        source_domains=tuple(s.name for s in sources),
        target_domain=target.name,
        domain_words={x.name: x.domain_prompt_name for x in [*sources, target]},
    )
