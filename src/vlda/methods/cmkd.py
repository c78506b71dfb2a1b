"""CMKD: Cross-Modal Knowledge Distillation (Zhou & Zhou, IEEE TCSVT 2024, arXiv 2408.02192;
official code ``Wenlve-Zhou/VLP-UDA``), with its ``+FixMatch`` variant.

CLIP's image encoder ``f`` is fine-tuned; its text encoder ``g`` stays frozen and the class
text features ``w_k = normalize(g("a photo of a {class}."))`` are computed once. A new task
head ``h = Linear(LayerNorm(BatchNorm1d(f(x))))`` (no bias; ``Linear ~ N(0, 0.001²)``, BN weight 1,
BN bias 0 and frozen) is the student; the zero-shot head on the *same, moving* features is the
teacher::

    p_h = softmax(h(f(x)))                       [B, C]   (prediction: the head only)
    p_g = softmax(exp(t) · <normalize(f(x)), w_k>)  [B, C]

Losses (``x_s, y_s`` source batch, ``x_t`` target batch)::

    GI_w(P) = Σ_i w_i (1 − Σ_k P_ik² / sg(Σ_j P_jk))      class-balanced Gini impurity (a sum
                                                          over the batch, as the official code)
    α_i     = sg(exp(−KL_i))      code: KL(p_g ‖ p_h) (``F.kl_div(p_h.log(), p_g)``)
                                  paper (``kl_direction: paper``): KL(p_h ‖ p_g)
    p_m     = ½ p_h + ½ sg(p_g)
    λ(t)    = 2 / (1 + exp(−γ min(t, T) / T)) − 1         γ = 1, T = 10,000 (the code's ramp)

    source_ce     = CE_0.1(h(f(x_s)), y_s)                 label smoothing 0.1      × 1
    task          = GI_α(p_h(x_t))                                                  × λ1 λ(t)
    distill       = GI_{1−α}(p_m(x_t))                                              × λ1 λ(t)
    reg_source_ce = CE(p_g(x_s), y_s)                                               × λ2
    reg_target_gi = GI_1(p_g(x_t))                                                  × λ3 λ(t)

``+FixMatch`` (``fixmatch: true``; paper App. B, ``models/make_model.py``): the target batch
comes as a weak and a strong view (:class:`~vlda.data.transforms.JitterRandAugmentTransform`:
ColorJitter(0.4, 0.4, 0.4, 0) + RandAugment ``rand-n2-m10-mstd0.5``); pseudo-labels from the
weak view of each head train the same head on the strong view::

    fixmatch_head = 1/B Σ_i 1[max p_h,i ≥ τ] CE(h(f(A(x_t)))_i, argmax p_h,i)       × λ_fm
    fixmatch_clip = 1/B Σ_i 1[max p_g,i ≥ τ] CE(zero-shot(f(A(x_t)))_i, argmax p_g,i) × λ_fm

Choices of the official code kept by default (the paper's variant as an option, where they
differ): the KL direction of α; the Gini impurity summed (not averaged) over the batch with its
class sums detached; the ramp's ``T = 10,000`` whatever the run length (``ramp_steps``); the head's
BatchNorm statistics taken per call (source, weak target, strong target separately); ResNet
BatchNorm in eval mode with its affine weights still trained (``fix_bn`` only calls ``eval()``;
``bn_affine: frozen`` is the paper's "BatchNorm is frozen" read strictly). Fixed here: α and
the losses are computed from log-softmax in fp32 (the code takes ``log`` of a softmax, which is
``-inf`` when a probability underflows), and a class column summing to 0 cannot divide by zero.
One encoder pass covers the source, target and strong batches (the code runs three; identical
results, since BatchNorm in the encoder is in eval mode). Under mixed precision only the encoder
runs in bf16/fp16; both heads and every loss are computed in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from vlda import distributed as D
from vlda.data.transforms import (
    JitterRandAugmentTransform,
    PairTransform,
    TrainTransform,
    Transform,
)
from vlda.methods.base import Method, load_buffer_state

_BN = nn.modules.batchnorm._BatchNorm
NonNegative = Annotated[float, Field(ge=0)]


@dataclass
class CMKDParams:
    """CMKD's options (defaults: the official code's ``configs/office_home.yaml``).

    ``lr_head``: the head's learning-rate multiplier over ``optim.lr`` (the encoder's);
    ``None`` takes the paper's: 10,000 for a ResNet tower (one with BatchNorm), else 1,000.
    ``bn_affine``: ``trained`` (code) or ``frozen`` (no gradient to the tower's BatchNorm weights).
    ``gradient_checkpointing``: recompute the tower's activations in backward (ViT towers).
    """

    template: str = "a photo of a {}."
    lambda1: NonNegative = 0.25
    lambda2: NonNegative = 0.1
    lambda3: NonNegative = 0.025
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.1
    kl_direction: Literal["code", "paper"] = "code"
    ramp_gamma: NonNegative = 1.0
    ramp_steps: Annotated[int, Field(gt=0)] = 10_000
    lr_head: Annotated[float, Field(gt=0)] | None = None
    bn_affine: Literal["trained", "frozen"] = "trained"
    gradient_checkpointing: bool = False
    fixmatch: bool = False
    fixmatch_weight: NonNegative = 0.5
    fixmatch_threshold: Annotated[float, Field(ge=0, le=1)] = 0.95


def gini_impurity(probs: Tensor, weights: Tensor | float = 1.0) -> Tensor:
    """Class-balanced Gini impurity ``Σ_i w_i (1 − Σ_k P_ik² / sg(Σ_j P_jk))`` (a scalar).

    Args:
        probs: ``[B, C]`` probabilities (rows sum to 1).
        weights: ``[B]`` per-sample weights, or one number.

    In a data-parallel run of ``W`` processes, the column sums are the global batch's and the
    sum over this rank's rows is multiplied by ``W``, so that the engine's average over the
    ranks is the impurity of the global batch, as one process computes it.
    """
    col = D.all_sum(probs.sum(dim=0, keepdim=True)).clamp_min(torch.finfo(probs.dtype).tiny)
    return D.global_batch_factor() * (weights * (1.0 - (probs.pow(2) / col).sum(dim=-1))).sum()


def kl_alpha(head_logits: Tensor, clip_logits: Tensor, direction: str = "code") -> Tensor:
    """``α = sg(exp(−KL))`` per sample ``[B]`` from the two heads' logits ``[B, C]``.

    ``code``: ``KL(p_g ‖ p_h)`` (the official ``F.kl_div(p_h.log(), p_g)``);
    ``paper``: ``KL(p_h ‖ p_g)`` (Eq. of the paper)."""
    log_h = F.log_softmax(head_logits.detach().float(), dim=-1)
    log_g = F.log_softmax(clip_logits.detach().float(), dim=-1)
    if direction == "code":
        kl = (log_g.exp() * (log_g - log_h)).sum(dim=-1)
    elif direction == "paper":
        kl = (log_h.exp() * (log_h - log_g)).sum(dim=-1)
    else:
        raise ValueError(f"kl_direction must be 'code' or 'paper', got {direction!r}")
    return torch.exp(-kl)


def ramp(step: int, gamma: float = 1.0, max_steps: int = 10_000) -> float:
    """The official ramp ``λ(t) = 2 / (1 + exp(−γ min(t, T) / T)) − 1`` (0 at ``t = 0``;
    about 0.462 from ``t = T`` on with ``γ = 1``)."""
    t = min(max(step, 0), max_steps) / max_steps
    return 2.0 / (1.0 + math.exp(-gamma * t)) - 1.0


def fixmatch_loss(weak_logits: Tensor, strong_logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``(1/B Σ_i m_i CE(strong_i, argmax q_i), m)`` with ``q = softmax(weak)`` (no gradient)
    and ``m_i = 1[max q_i ≥ threshold]``; 0 when no sample passes."""
    with torch.no_grad():
        conf, pseudo = torch.softmax(weak_logits.float(), dim=-1).max(dim=-1)
        mask = (conf >= threshold).float()
    ce = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
    return (ce * mask).mean(), mask


def cmkd_head(dim: int, n_classes: int) -> nn.Sequential:
    """``BatchNorm1d → LayerNorm(eps 1e-6) → Linear(no bias)``, initialised as the official
    ``weights_init_classifier``: Linear ``N(0, 0.001²)``, BN weight 1 and bias 0, BN bias frozen."""
    bn, linear = nn.BatchNorm1d(dim), nn.Linear(dim, n_classes, bias=False)
    nn.init.normal_(linear.weight, std=0.001)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return nn.Sequential(bn, nn.LayerNorm(dim, eps=1e-6), linear)


class CMKD(Method):
    name = "cmkd"
    Params = CMKDParams
    image_encoder = "trained"
    uses_feature_cache = False
    artefact = "the fine-tuned image tower and the task head (with its BatchNorm statistics)"
    text_features: Tensor

    def attach_backbone(self, backbone: nn.Module) -> None:
        """Freeze the backbone, then unfreeze its image tower (minus BatchNorm weights with
        ``bn_affine: frozen``); build the head."""
        super().attach_backbone(backbone)
        p = self.params
        if "{}" not in p.template:
            raise ValueError(f"template {p.template!r} has no '{{}}' for the class name")
        backbone.requires_grad_(False)
        tower = self.backbone.image_tower()
        tower.requires_grad_(True)
        if p.bn_affine == "frozen":
            for m in tower.modules():
                if isinstance(m, _BN):
                    m.requires_grad_(False)
        if p.gradient_checkpointing:
            self.backbone.set_image_grad_checkpointing(True)
        self.head = cmkd_head(self.backbone.embed_dim, self.task.n_classes)
        self.register_buffer("text_features", torch.empty(0), persistent=False)
        self.step = 0

    # -- facts the engine asks for --------------------------------------------------------------
    def finetuned_encoder(self) -> nn.Module:
        """CLIP's image tower (RST sparsifies its drift from the pretrained weights)."""
        return self.backbone.image_tower()

    def has_batchnorm(self) -> bool:
        return any(isinstance(m, _BN) for m in self.backbone.image_tower().modules())

    def head_lr_scale(self) -> float:
        if self.params.lr_head is not None:
            return float(self.params.lr_head)
        return 10_000.0 if self.has_batchnorm() else 1_000.0

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """The tower at ``optim.lr``, the head at ``lr_head`` times it."""
        tower = [q for q in self.backbone.image_tower().parameters() if q.requires_grad]
        head = [q for q in self.head.parameters() if q.requires_grad]
        return [
            {"params": tower, "lr_scale": 1.0, "name": "encoder"},
            {"params": head, "lr_scale": self.head_lr_scale(), "name": "head"},
        ]

    def train(self, mode: bool = True) -> CMKD:
        """Train mode for the head; BatchNorm of the image tower stays in eval mode."""
        super().train(mode)
        for m in self.backbone.image_tower().modules():
            if isinstance(m, _BN):
                m.eval()
        return self

    def on_train_step(self, step: int, total_steps: int) -> None:
        self.step = int(step)

    def setup(self, device: torch.device) -> None:
        """Encode the class prompts once (the text encoder is frozen)."""
        self.text_features = self._encode_prompts().to(device)

    def _encode_prompts(self) -> Tensor:
        texts = [self.params.template.format(n) for n in self.task.prompt_names]
        with torch.autocast(self.backbone.device.type, enabled=False):
            return self.backbone.encode_texts(texts).float()

    def target_train_transform(self, weak: Transform) -> Transform:
        """With ``fixmatch``: ``[weak view, strong view]`` of each target image."""
        if not self.params.fixmatch:
            return weak
        if not isinstance(weak, TrainTransform):
            raise TypeError(f"cmkd: expected the engine's TrainTransform, got {type(weak).__name__}")
        strong = JitterRandAugmentTransform(weak.size, weak.mean, weak.std, scale=weak.scale, flip=weak.flip)
        return PairTransform(weak, strong)

    # -- forward --------------------------------------------------------------------------------
    def image_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Unnormalised image features ``[B, D]`` (fp32) of the fine-tuned tower (the head
        starts with BatchNorm; the zero-shot head normalises)."""
        if "images" not in batch:
            raise ValueError("method 'cmkd' fine-tunes the image encoder and needs images, not cached features")
        return self.backbone.encode_image(batch["images"]).float()

    def logits(self, features: Tensor) -> Tensor:
        """The task head's logits ``[B, C]`` (the prediction; no text encoder), in fp32 under
        mixed precision too (the head is small; only the encoder runs in bf16/fp16)."""
        with torch.autocast(features.device.type, enabled=False):
            return self.head(features.float())

    def clip_logits(self, features: Tensor) -> Tensor:
        """The zero-shot head on the same features: ``exp(t) · normalize(f) @ w.T`` ``[B, C]``."""
        if self.text_features.numel() == 0:
            self.text_features = self._encode_prompts().to(features.device)
        with torch.autocast(features.device.type, enabled=False):  # logit scale 100: keep fp32
            f = F.normalize(features.float(), dim=-1)
            return self.backbone.logit_scale * f @ self.text_features.t()

    def loss_weights(self) -> dict[str, float]:
        p = self.params
        lam = ramp(self.step, p.ramp_gamma, p.ramp_steps)
        weights = {
            "source_ce": 1.0, "task": p.lambda1 * lam, "distill": p.lambda1 * lam,
            "reg_source_ce": p.lambda2, "reg_target_gi": p.lambda3 * lam,
        }
        if p.fixmatch:
            weights.update(fixmatch_head=p.fixmatch_weight, fixmatch_clip=p.fixmatch_weight)
        return weights

    def _views(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> list[Tensor]:
        """``[source, weak target]`` (+ the strong target view with ``fixmatch``; a batch of
        single views lets the weak view double as the strong one)."""
        xt = target["images"]
        weak, strong = (xt[:, 0], xt[:, 1]) if xt.dim() == 5 else (xt, xt)
        return [source["images"], weak, *([strong] if self.params.fixmatch else [])]

    def forward_losses(
        self, source: Mapping[str, Tensor], target: Mapping[str, Tensor], metrics: dict[str, float]
    ) -> dict[str, Tensor]:
        """The named (unweighted) objectives of one step; see the module docstring."""
        p = self.params
        views = self._views(source, target)
        feats = self.image_features({"images": torch.cat(views)}).split([len(v) for v in views])
        y = source["labels"]
        head_s, head_t = self.logits(feats[0]), self.logits(feats[1])
        clip_s, clip_t = self.clip_logits(feats[0]), self.clip_logits(feats[1])
        p_h, p_g = torch.softmax(head_t, dim=-1), torch.softmax(clip_t, dim=-1)
        alpha = kl_alpha(head_t, clip_t, p.kl_direction)
        p_m = 0.5 * p_h + 0.5 * p_g.detach()
        losses = {
            "source_ce": F.cross_entropy(head_s, y, label_smoothing=p.label_smoothing),
            "task": gini_impurity(p_h, alpha),
            "distill": gini_impurity(p_m, 1.0 - alpha),
            "reg_source_ce": F.cross_entropy(clip_s, y),
            "reg_target_gi": gini_impurity(p_g),
        }
        metrics["cmkd/alpha"] = float(alpha.mean())
        metrics["cmkd/ramp"] = ramp(self.step, p.ramp_gamma, p.ramp_steps)
        if p.fixmatch:
            strong = feats[2]
            losses["fixmatch_head"], m_h = fixmatch_loss(head_t, self.logits(strong), p.fixmatch_threshold)
            losses["fixmatch_clip"], m_g = fixmatch_loss(clip_t, self.clip_logits(strong), p.fixmatch_threshold)
            metrics["fixmatch/mask_head"] = float(m_h.mean())
            metrics["fixmatch/mask_clip"] = float(m_g.mean())
        return losses

    # -- state ----------------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The trained parameters (image tower, head) and the head's BatchNorm buffers."""
        state = super().trainable_state_dict()
        state.update({f"buffer:head.{n}": b.detach().clone() for n, b in self.head.named_buffers()})
        return state

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        super().load_trainable_state_dict({k: v for k, v in state.items() if not k.startswith("buffer:")})
        load_buffer_state({f"head.{n}": b for n, b in self.head.named_buffers()}, state, self.name)
