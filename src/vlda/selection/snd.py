"""Soft neighbourhood density (SND), computed in row chunks so memory stays ``O(chunk · N)``."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from vlda.selection.base import Validator, probabilities, row_entropy, split_of
from vlda.selection.outputs import SplitOutputs

# Entries of one chunk of the similarity matrix: 2^24 float32 = 64 MiB at most, whatever N.
CHUNK_ELEMENTS = 1 << 24


def default_device() -> torch.device:
    """CUDA when there is one (SND is ``O(N²)``: 10^10 similarities for a 10^5-image target)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def soft_neighbourhood_density(
    p: Tensor, temperature: float = 0.05, chunk_rows: int | None = None,
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
) -> float:
    """``SND = (1/N) sum_i H(s_i)``, ``s_ij = softmax_{j≠i}(cos(p_i, p_j) / T)``.

    Args:
        p: ``[N, C]`` predicted probabilities of the target images (``N >= 2``).
        temperature: ``T`` (0.05, the paper's).
        chunk_rows: rows of the ``[N, N]`` similarity matrix built at once (default: as many as
            fit in :data:`CHUNK_ELEMENTS` entries); the result does not depend on it.
        device: where to compute (default: :func:`default_device`).
        dtype: of the similarities (float32, as pytorch-adapt; the per-row entropies are summed
            in float64).
    """
    dev = torch.device(device) if device is not None else default_device()
    x = nn.functional.normalize(p.to(dev, dtype), dim=-1)
    n = x.shape[0]
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // max(n, 1))
    total = torch.zeros((), dtype=torch.float64, device=dev)
    for start in range(0, n, rows):
        sim = x[start:start + rows] @ x.t() / temperature  # [B, N]
        idx = torch.arange(sim.shape[0], device=dev)
        sim[idx, idx + start] = -torch.inf  # exclude each image's similarity to itself
        total += row_entropy(sim.softmax(dim=-1)).double().sum()
    return float(total / n)


class SoftNeighbourhoodDensity(Validator):
    """Soft neighbourhood density (Saito et al., ICCV 2021, "Tune it the Right Way:
    Unsupervised Validation of Domain Adaptation via Soft Neighborhood Density"):
    ``score = (1/N) sum_i H(s_i)`` with ``s_ij = softmax_{j≠i}(cos(p_i, p_j) / T)``, ``p_i``
    the softmax predictions of target image ``i`` and ``T = 0.05`` (higher = denser, better).

    As pytorch-adapt's ``SNDValidator`` (its default ``layer="preds"``): cosine similarity of
    the softmax predictions, each image's similarity to itself left out. Never builds the
    ``N×N`` matrix: :func:`soft_neighbourhood_density` works in row chunks (``chunk_rows``), in
    float32, on the GPU when there is one (``device``).
    Fails when predictions collapse: if most images share one confident prediction the
    neighbourhoods are dense and SND is high although accuracy is low (in Musgrave et al.'s
    benchmark it chose some of the worst DANN checkpoints)."""

    name = "snd"
    title = "soft neighbourhood density of target predictions"
    needs = ("target_train",)

    def __init__(
        self, temperature: float = 0.05, chunk_rows: int | None = None, device: torch.device | str | None = None
    ) -> None:
        self.temperature = temperature
        self.chunk_rows = chunk_rows
        self.device = device

    def score(self, outputs: Mapping[str, SplitOutputs]) -> float | None:
        tgt = split_of(outputs, "target_train")
        if tgt is None or len(tgt) < 2:
            return None
        return soft_neighbourhood_density(probabilities(tgt.logits), self.temperature, self.chunk_rows, self.device)
