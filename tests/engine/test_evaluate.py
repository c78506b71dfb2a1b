"""The evaluator's outputs: every row of a split, in pool order, and its memory at scale."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from vlda.data.feature_cache import FeatureSet
from vlda.engine.evaluate import Evaluator
from vlda.engine.streams import Source


class LinearProbe(nn.Module):
    """A method as the evaluator sees it: normalised features, then a fixed linear map."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.task = SimpleNamespace(n_classes=n_classes)
        self.weight = nn.Parameter(torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(0)))

    def image_features(self, batch):
        return F.normalize(batch["features"].float(), dim=-1)

    def logits(self, features):
        return features @ self.weight.t()


def feature_set(n: int, dim: int, n_classes: int) -> FeatureSet:
    rng = np.random.default_rng(0)
    return FeatureSet(
        features=rng.standard_normal((n, 3, dim)).astype(np.float16),
        labels=torch.from_numpy(rng.integers(0, n_classes, n)),
        valid=torch.ones(n, dtype=torch.bool),
        paths=[f"{i}.jpg" for i in range(n)],
        key="test",
    )


def test_outputs_are_every_pool_row_in_order_computed_directly():
    fs, method = feature_set(20, 8, 5), LinearProbe(8, 5)
    pools = [np.array([3, 1, 4, 15, 9, 2, 6]), np.array([0, 19, 7, 11])]  # two source domains
    ev = Evaluator(method, {"source_val": [Source(0, pools[0], features=fs), Source(1, pools[1], features=fs)]},
                   batch_size=3)
    out = ev.outputs(["source_val"], features=True)["source_val"]
    rows = np.concatenate(pools)
    clean = torch.from_numpy(fs.features[rows, 0].astype(np.float32))  # view 0: the clean image
    feats = clean / clean.norm(dim=-1, keepdim=True)
    assert torch.equal(out.labels, fs.labels[rows])
    torch.testing.assert_close(out.features, feats)
    torch.testing.assert_close(out.logits, feats @ method.weight.detach().t())
    assert out.logits.dtype == torch.float32 and out.logits.is_contiguous()


def test_empty_split_gives_empty_outputs():
    fs = feature_set(4, 8, 5)
    ev = Evaluator(LinearProbe(8, 5), {"source_val": [Source(0, np.array([], dtype=np.int64), features=fs)]})
    assert not ev.has("source_val")
    out = ev._run(ev.splits["source_val"], features=True)
    assert out.logits.shape == (0, 5) and out.labels is not None and out.labels.numel() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_evaluation_holds_the_logits_once():
    """Peak memory of evaluating 40,000 rows x 2,000 classes (320 MB of fp32 logits): the logits
    once plus a batch, not the batches and their concatenation (twice the logits)."""
    code = textwrap.dedent(
        """
        import sys, numpy as np, torch
        sys.path.insert(0, sys.argv[1])
        from test_evaluate import LinearProbe, feature_set
        from vlda.engine.evaluate import Evaluator
        from vlda.engine.streams import Source

        def kb(field):
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1])

        fs, method = feature_set(40_000, 8, 2_000), LinearProbe(8, 2_000)
        ev = Evaluator(method, {"source_val": [Source(0, np.arange(40_000), features=fs)]}, batch_size=512)
        # one batch first, so that what torch sets up on a first call is not counted
        method.logits(method.image_features({"features": torch.from_numpy(fs.features[:512, 0])}))
        before = kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
        except OSError:
            pass  # VmHWM then also holds the imports' peak, below the evaluation's
        out = ev.outputs(["source_val"])["source_val"]
        print((kb("VmHWM") - before) / 1024, out.logits.numel() * 4 / 2**20)
        """
    )
    here = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", code, here], capture_output=True, text=True, check=True)
    grew_mb, logits_mb = map(float, done.stdout.split())
    assert logits_mb == pytest.approx(305.2, abs=1)
    assert grew_mb < 1.4 * logits_mb, f"evaluation grew the process by {grew_mb:.0f} MB for {logits_mb:.0f} MB of logits"
