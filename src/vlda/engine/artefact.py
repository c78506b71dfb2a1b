"""The weights a run saves (``last.pt``, ``selected.pt``, the weights in ``checkpoint.pt``) and
how they are loaded back.

Two forms, both dicts of tensors that ``torch.load(weights_only=True)`` reads:

* **dense** (every method without RST): the method's
  :meth:`~vlda.methods.base.Method.trainable_state_dict`, name -> tensor;
* **sparse residual** (``rst.enabled``): the fine-tuned encoder as the positions where it
  differs from its pretrained weights θ0, plus the rest of the trainable state (head, bottleneck,
  buffers) dense::

      {"format": "vlda.rst-residual/1", "threshold": τ, "theta0_sha256": "<hex>",
       "encoder": {name: {"index": int32|int64 [k], "value": [k]}},   # flat positions, θ there
       "dense": {name: tensor}}

  The residual ``θ − θ0`` is non-zero exactly at ``index``. The file stores θ's *values* there,
  not the differences, so that loading (``θ = θ0; θ.view(-1)[index] = value``) gives back the
  fine-tuned weights bitwise (``θ0 + (θ − θ0)`` is not always ``θ`` in floating point): the
  loaded model's predictions are identical to the dense one's. The official code saves
  ``(θ − θ0).to_sparse()`` (``utils/tools.py::save_model``) and adds it back densely.

Loading a residual needs θ0: the method built from the run's config holds it
(:func:`load_weights`); its SHA-256 must match ``theta0_sha256``, or the load is refused with a
sentence naming ``model.pretrained``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vlda.engine.checkpoint import load_safe
from vlda.engine.rst import encoder_parameters, tensors_digest
from vlda.methods.base import Method

__all__ = ["FORMAT", "artefact_stats", "expand_state", "is_residual", "load_weights", "sparse_state"]

FORMAT = "vlda.rst-residual/1"


def is_residual(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is a sparse-residual artefact (else a dense trainable state)."""
    return state.get("format") == FORMAT


def sparse_state(
    dense: Mapping[str, Tensor], names: Sequence[str], theta0: Sequence[Tensor], digest: str, threshold: float
) -> dict[str, Any]:
    """The sparse-residual form of a dense trainable state (``names``: the encoder's entries,
    ``theta0``: their pretrained values, ``digest``: their :func:`tensors_digest`)."""
    rest = dict(dense)
    encoder: dict[str, dict[str, Tensor]] = {}
    for name, t0 in zip(names, theta0, strict=True):
        flat = rest.pop(name).reshape(-1)
        index = (flat != t0.reshape(-1).to(flat.device)).nonzero().squeeze(1)
        index_dtype = torch.int32 if flat.numel() < 2**31 else torch.int64
        encoder[name] = {"index": index.to(index_dtype).cpu(), "value": flat[index].cpu()}
    return {"format": FORMAT, "threshold": float(threshold), "theta0_sha256": digest,
            "encoder": encoder, "dense": rest}


def expand_state(state: Mapping[str, Any], names: Sequence[str], theta0: Sequence[Tensor]) -> dict[str, Tensor]:
    """The dense trainable state of an artefact (a dense one is returned as it is): each encoder
    entry is ``theta0`` with the stored values written at the stored positions. A residual taken
    against other pretrained weights (digest mismatch) or for other parameters is a
    ``ValueError``."""
    if not is_residual(state):
        return dict(state)
    digest = tensors_digest(theta0)
    if state["theta0_sha256"] != digest:
        raise ValueError(
            "these weights are a sparse residual (RST) on pretrained encoder weights other than "
            "the ones this config loads; load them with the run's own model.pretrained "
            f"(residual taken against sha256 {state['theta0_sha256'][:12]}..., this model's is {digest[:12]}...)"
        )
    stored = state["encoder"]
    if set(stored) != set(names):
        raise ValueError(
            f"the sparse residual does not match this method's encoder: missing "
            f"{sorted(set(names) - set(stored))}, unexpected {sorted(set(stored) - set(names))}"
        )
    dense = dict(state["dense"])
    for name, t0 in zip(names, theta0, strict=True):
        flat = t0.detach().cpu().clone().reshape(-1)
        flat[stored[name]["index"].long()] = stored[name]["value"].to(flat.dtype)
        dense[name] = flat.view(t0.shape)
    return dense


def load_weights(method: Method, path: Path) -> None:
    """Load a saved artefact (dense or sparse residual) into ``method``, freshly built from the
    run's config: a residual is added to the pretrained encoder weights the method holds now."""
    names, params = encoder_parameters(method)
    method.load_trainable_state_dict(expand_state(load_safe(path), names, params))


def _payload_bytes(tensors: Any) -> int:
    if isinstance(tensors, Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, Mapping):
        return sum(_payload_bytes(v) for v in tensors.values())
    return 0


def artefact_stats(path: Path, theta0: Sequence[Tensor]) -> dict[str, Any]:
    """What a sparse-residual artefact costs (``summary.json``): downstream parameters (encoder
    elements that differ from θ0, plus every other learned parameter: head, bottleneck), their
    share of the encoder, and the file's bytes against the dense trainable state's tensor bytes
    (what ``last.pt`` would hold without RST)."""
    state = load_safe(path)
    changed = sum(int(e["index"].numel()) for e in state["encoder"].values())
    encoder_numel = sum(t.numel() for t in theta0)
    other = sum(t.numel() for k, t in state["dense"].items() if not k.startswith("buffer:"))
    dense_bytes = sum(t.numel() * t.element_size() for t in theta0) + _payload_bytes(state["dense"])
    file_bytes = Path(path).stat().st_size
    return {
        "encoder_params": encoder_numel,
        "encoder_changed": changed,
        "encoder_changed_pct": round(100.0 * changed / max(encoder_numel, 1), 4),
        "other_params": other,
        "downstream_params": changed + other,
        "file_bytes": file_bytes,
        "dense_bytes": dense_bytes,
        "file_vs_dense": round(file_bytes / max(dense_bytes, 1), 6),
    }
