"""Residual Sparse Training (RST; Zhou & Zhou, "Unsupervised Domain Adaption Harnessing
Vision-Language Pre-training", IEEE TCSVT 2024, the CMKD paper, §III-D).

After **every** optimizer step, each parameter θ of the fine-tuned image encoder
(:meth:`~vlda.methods.base.Method.finetuned_encoder`) is projected elementwise::

    mask = |θ − θ0| > τ          θ ← θ0 + mask·(θ − θ0)   (i.e. θ where mask, else θ0)

θ0 the pretrained weights, τ ``rst.threshold``. The sparsity pattern is learnt implicitly: a
weight leaves θ0 only once one step has moved it by more than τ. The official code
(``Wenlve-Zhou/VLP-UDA``, ``models/rst.py::training``) loops over the parameters in Python and
rebuilds each one as ``mask·θ + (~mask)·θ0``; here the projection is a handful of
``torch._foreach_*`` kernels over all encoder parameters at once, and it is exact: a kept
weight stays bitwise θ, a reset one becomes bitwise θ0 (``lerp`` with weight 0 or 1).

The projection acts on the parameters the optimizer stepped (fp32 master weights under
autocast; a step the GradScaler skipped leaves them unchanged, and the projection is then a
no-op). The optimizer state (momentum) is left as it is, as in the official code.

θ0 is taken from the encoder when the run starts, before step 0 and before a checkpoint is
restored: a resumed run's θ0 is the pretrained weights its config names, never the resumed
ones. Its SHA-256 (:func:`tensors_digest`) is stored in every artefact, so loading a residual
onto other weights is refused (:mod:`vlda.engine.artefact`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vlda.methods.base import Method

__all__ = ["ResidualSparseTraining", "encoder_parameters", "tensors_digest"]


def encoder_parameters(method: Method) -> tuple[list[str], list[nn.Parameter]]:
    """``(names, params)``: the trained parameters of ``method.finetuned_encoder()``, named as in
    ``method.named_parameters()`` (the keys of its trainable state), in module order. Empty when
    the method fine-tunes no encoder."""
    encoder = method.finetuned_encoder()
    if encoder is None:
        return [], []
    name_of = {id(p): n for n, p in method.named_parameters()}
    params = [p for p in encoder.parameters() if p.requires_grad]
    return [name_of[id(p)] for p in params], params


def tensors_digest(tensors: Sequence[Tensor]) -> str:
    """SHA-256 over the shapes, dtypes and bytes of ``tensors`` (in order): the identity of the
    pretrained weights a residual is taken against."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ResidualSparseTraining:
    """The RST projection of one method's fine-tuned encoder.

    Args:
        method: a method whose :meth:`~vlda.methods.base.Method.finetuned_encoder` holds the
            pretrained weights now (θ0 is copied here, on the parameters' device).
        threshold: τ (``rst.threshold``; official default 1e-5, the paper 1e-6 for ViT).

    Attributes:
        names: the encoder parameters' names in the method's trainable state.
        params: those parameters; ``theta0``: their pretrained values (same shapes, ``[*]`` each).
        digest: :func:`tensors_digest` of ``theta0``.
    """

    def __init__(self, method: Method, threshold: float) -> None:
        if threshold <= 0:
            raise ValueError(f"rst.threshold must be > 0, got {threshold}")
        self.threshold = float(threshold)
        self.names, self.params = encoder_parameters(method)
        if not self.params:
            raise ValueError(
                f"rst.enabled: method {method.name!r} trains no encoder parameter here (a frozen "
                "or zero-learning-rate backbone); turn RST off or train the encoder"
            )
        self.theta0 = [p.detach().clone() for p in self.params]
        self.digest = tensors_digest(self.theta0)

    @property
    def numel(self) -> int:
        """Number of encoder parameters (elements)."""
        return sum(t.numel() for t in self.theta0)

    @torch.no_grad()
    def project(self) -> None:
        """``θ ← θ if |θ − θ0| > τ else θ0``, elementwise, in place, over every encoder parameter.

        ``w = −min(sign(|θ − θ0| − τ), 0)`` is 1 where the weight is reset and 0 where it is
        kept; ``lerp(θ, θ0, w)`` then gives θ0 (w = 1) or θ (w = 0) exactly."""
        params: list[Tensor] = list(self.params)
        w = torch._foreach_sub(params, self.theta0)
        torch._foreach_abs_(w)
        torch._foreach_sub_(w, self.threshold)
        torch._foreach_sign_(w)
        torch._foreach_clamp_max_(w, 0.0)
        torch._foreach_neg_(w)
        torch._foreach_lerp_(params, self.theta0, w)  # type: ignore[arg-type]  # (the stub lacks the tensor-weight overload)

    @torch.no_grad()
    def changed(self) -> int:
        """Downstream encoder parameters: how many elements differ from θ0."""
        return int(sum(int((p != p0).sum()) for p, p0 in zip(self.params, self.theta0, strict=True)))
