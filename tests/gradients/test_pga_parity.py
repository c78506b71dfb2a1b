"""Parity with the official PGA / MPGA step.

The reference below is a straightforward re-implementation of ``VietHoang1512/PGA``
``DAPrompt/trainers/lapa.py`` (PGA) and ``lampa.py`` (MPGA) ``forward_backward``, written here
independently of vlda, in fp32 and without the official AMP: every pass runs the image encoder,
encodes the learnable prompts *and* the zero-shot prompts over the full 77-token context,
reads the pseudo-labels from the zero-shot half, calls ``backward()``, reads and zeroes
``.grad``, and moves parameters through ``.data`` as the official code does. vlda's step (image
features given once, zero-shot features once, prompts cut at EOT, shared prefix encoded once,
``autograd.grad``) must give the same parameters after several SGD steps.

Deviation from the official code kept in the reference: the MPGA prompt text has the space
before "image" (lampa.py writes ``"image."`` glued to the domain word).

Tolerance: relative difference ≤ 1e-5 per learned tensor, in fp32. The two computations
round differently (77-token batch vs. cut / shared prefix; measured against float64, either
one's gradients are off by ~3e-6 relative on this tiny random model), and PGA normalises
gradients whose norms fall below 0.1 within a few steps, which amplifies rounding; the radii
are chosen where that amplification stays moderate (with much larger ones two fp32
implementations drift apart chaotically, whatever their correctness).
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from vlda.engine.stepper import take_step
from vlda.gradients.pga import PGAStrategy
from vlda.methods.base import Task
from vlda.methods.pga import MPGA, PGA, MPGAParams, PGAParams
from vlda.models.backbone import clip_tokenize

CLASSES = ("dog", "cat", "alarm clock", "bird")


class OfficialPrompts(nn.Module):
    """lapa.py / lampa.py ``PromptLearner``: ctx (generic or CSC), one block per source, tgt."""

    def __init__(self, model, classnames, src_texts, tgt_text, n_ctx, n_dmx, ctx, srcs, tgt):
        super().__init__()
        n = n_ctx + n_dmx
        prompt_prefix = " ".join(["X"] * n)
        self.n, self.n_cls = n, len(classnames)
        self.ctx = nn.Parameter(ctx.clone())
        self.srcs = nn.ParameterList([nn.Parameter(s.clone().unsqueeze(0)) for s in srcs])  # [1, M2, W]
        self.tgt = nn.Parameter(tgt.clone().unsqueeze(0))
        naive = [f"a photo of a {name}." for name in classnames]
        self.naive_tokens = clip_tokenize(naive)
        with torch.no_grad():
            self.naive_embedding = model.token_embedding(self.naive_tokens)
        self.domain = []
        for fmt in [*src_texts, tgt_text]:
            tokens = clip_tokenize([prompt_prefix + " " + fmt.format(name) for name in classnames])
            with torch.no_grad():
                emb = model.token_embedding(tokens)
            self.domain.append((emb[:, :1], emb[:, 1 + n :], torch.cat([tokens, self.naive_tokens])))

    def forward(self, d):  # d: source index, or -1 for the target
        prefix, suffix, tokens = self.domain[d]
        dmx = self.tgt if d == -1 else self.srcs[d]
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(1, -1, -1).unsqueeze(1).expand(-1, self.n_cls, -1, -1)
        else:
            ctx = ctx.unsqueeze(0).expand(1, -1, -1, -1)
        dmx = dmx.unsqueeze(1).expand(-1, self.n_cls, -1, -1)
        ctxdmx = torch.cat([ctx, dmx], dim=2).reshape(self.n_cls, self.n, -1)
        prompts = torch.cat([prefix, ctxdmx, suffix], dim=1)
        return torch.cat([prompts, self.naive_embedding], dim=0), tokens


class OfficialStep:
    def __init__(self, model, prompts, radius, align, tradeoff, tau, T, lr):
        self.model, self.pl = model, prompts
        self.radius, self.align, self.tradeoff, self.tau, self.T = radius, align, tradeoff, tau, T
        self.optim = torch.optim.SGD(self.pl.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.n_cls = prompts.n_cls

    def text_encoder(self, prompts, tokenized):
        m = self.model
        x = prompts + m.positional_embedding
        x = m.transformer(x, attn_mask=m.attn_mask)
        x = m.ln_final(x)
        return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ m.text_projection

    def forward(self, image, d):
        image_features = self.model.encode_image(image)
        prompts, tokens = self.pl(d)
        text_features = self.text_encoder(prompts, tokens)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return self.model.logit_scale.exp() * image_features @ text_features.t()

    # get/set exactly as the official PromptLearner does (flattened clones through .data)
    @staticmethod
    def get_grad(p):
        grad = p.grad.data.clone().flatten()
        p.grad.zero_()
        return grad

    @staticmethod
    def set_param(p, flat):
        p.data = flat.data.clone().reshape(p.shape)

    def target_loss(self, image_u):
        output_u = self.forward(image_u, -1)
        pseudo_label = torch.softmax(output_u[:, -self.n_cls :].reshape(-1, self.n_cls) / self.T, dim=-1)
        max_probs, label_p = torch.max(pseudo_label, dim=-1)
        mask = max_probs.ge(self.tau).float()
        return (F.cross_entropy(output_u[:, : self.n_cls], label_p, reduction="none") * mask).sum() / mask.sum()

    def step(self, image_x, label, domain, image_u):
        pl, r, a = self.pl, self.radius, self.align
        k = len(pl.srcs)
        shared_param = pl.ctx.data.clone().flatten()
        source_params = [s.data.clone().flatten() for s in pl.srcs]
        target_param = pl.tgt.data.clone().flatten()

        # loss 1, stage 1
        self.optim.zero_grad()
        self.target_loss(image_u).backward()
        target_grad = self.get_grad(pl.tgt)
        shared_grad_tgt = self.get_grad(pl.ctx)
        # loss 2, stage 1 (one pass per source)
        source_grads, shared_grads_srcs = [], []
        for i in range(k):
            self.optim.zero_grad()
            output_x = self.forward(image_x[domain == i], i)
            F.cross_entropy(output_x[:, : self.n_cls], label[domain == i]).backward()
            source_grads.append(self.get_grad(pl.srcs[i]))
            shared_grads_srcs.append(self.get_grad(pl.ctx))

        # loss 1, stage 2
        self.set_param(pl.tgt, target_param + r * target_grad / (torch.norm(target_grad) + 1e-12))
        perturbed = shared_param + r * shared_grad_tgt / (torch.norm(shared_grad_tgt) + 1e-12) - a * sum(
            [g / (torch.norm(g) * torch.norm(shared_grad_tgt) + 1e-12) for g in shared_grads_srcs]
        )
        self.set_param(pl.ctx, perturbed)
        self.target_loss(image_u).backward()
        target_grad = self.get_grad(pl.tgt)
        shared_grad_tgt_new = self.get_grad(pl.ctx)

        # loss 2, stage 2
        source_grads_new, shared_grads_srcs_new = [], []
        for i in range(k):
            g_s = shared_grads_srcs[i]
            self.set_param(
                pl.srcs[i], source_params[i] + r * source_grads[i] / (torch.norm(source_grads[i]) + 1e-12)
            )
            perturbed = shared_param + r * g_s / (torch.norm(g_s) + 1e-12) - a * shared_grad_tgt / (
                torch.norm(shared_grad_tgt) * torch.norm(g_s) + 1e-12
            )
            self.set_param(pl.ctx, perturbed)
            self.optim.zero_grad()
            output_x = self.forward(image_x[domain == i], i)
            F.cross_entropy(output_x[:, : self.n_cls], label[domain == i]).backward()
            source_grads_new.append(self.get_grad(pl.srcs[i]))
            shared_grads_srcs_new.append(self.get_grad(pl.ctx))

        # restore, set gradients, step
        self.set_param(pl.tgt, target_param)
        for i in range(k):
            self.set_param(pl.srcs[i], source_params[i])
            pl.srcs[i].grad = source_grads_new[i].data.clone().reshape(pl.srcs[i].shape)
        self.set_param(pl.ctx, shared_param)
        shared_grad = shared_grad_tgt_new + sum(shared_grads_srcs_new) * self.tradeoff
        pl.ctx.grad = shared_grad.data.clone().reshape(pl.ctx.shape)
        pl.tgt.grad = target_grad.data.clone().reshape(pl.tgt.shape)
        self.optim.step()
        self.optim.zero_grad()


def batches(n_steps, k, size, image_size, n_cls, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_steps):
        image_x = torch.randn(k * size, 3, image_size, image_size, generator=g)
        label = torch.randint(n_cls, (k * size,), generator=g)
        domain = torch.arange(k).repeat_interleave(size)
        image_u = torch.randn(size + 2, 3, image_size, image_size, generator=g)
        out.append((image_x, label, domain, image_u))
    return out


@pytest.mark.parametrize(
    "method,sources,csc",
    [("pga", ("art",), False), ("pga", ("art",), True), ("mpga", ("art", "product"), False)],
    ids=["pga", "pga-csc", "mpga-2src"],
)
def test_vlda_step_matches_the_official_step(tiny_vit, method, sources, csc):
    k, n_steps = len(sources), 4
    task = Task(CLASSES, CLASSES, sources, "clipart")
    hp = dict(radius=0.02, align=0.005, tradeoff=0.5)
    model = tiny_vit.model
    data = batches(n_steps, k, 4, tiny_vit.image_size, len(CLASSES))

    cls, params_cls = (PGA, PGAParams) if method == "pga" else (MPGA, MPGAParams)
    torch.manual_seed(0)
    vm = cls(tiny_vit, task, params_cls(n_ctx=4, n_domain_ctx=3, class_specific=csc, tau=0.0))
    vm.setup(torch.device("cpu"))
    # τ: a value about a third of the target samples fail, with at least one passing per batch
    with torch.no_grad():
        conf = torch.cat([vm.pseudo_labels(vm.image_features({"images": u}))[2] for *_, u in data])
    tau = float(conf.quantile(0.35))
    vm.params.tau = tau
    for *_, u in data:
        assert vm.pseudo_labels(vm.image_features({"images": u}))[1].any()

    fmt = "{} " + "{}." if method == "pga" else "{}, a {} image."
    src_texts = [fmt.replace("{}", "{}", 1).format("{}", d) for d in sources]
    ref = OfficialStep(
        model,
        OfficialPrompts(
            model, CLASSES, src_texts, fmt.format("{}", "clipart"), 4, 3,
            vm.prompt_learner.ctx.detach(), [p.detach() for p in vm.prompt_learner.domain_ctx[:k]],
            vm.prompt_learner.domain_ctx[k].detach(),
        ),
        tau=tau, T=1.0, lr=0.05, **hp,
    )
    assert vm.prompt_learner.texts[0] == "X " * 7 + fmt.format("dog", sources[0])

    start = [p.detach().clone() for p in vm.trainable_parameters()]

    def run_vlda(strategy):
        with torch.no_grad():
            for p, s in zip(vm.trainable_parameters(), start, strict=True):
                p.copy_(s)
        params = vm.trainable_parameters()
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
        for image_x, label, domain, image_u in data:
            with torch.no_grad():  # the feature cache's job: image features computed once
                src = {"features": model.encode_image(image_x), "labels": label, "domains": domain}
                tgt = {"features": model.encode_image(image_u), "domains": torch.full((len(image_u),), k)}
            take_step(strategy, vm.objectives(src, tgt), params, opt)
        return [p.detach().clone() for p in params]

    # not vacuous: without the perturbations the parameters end up far away
    plain = run_vlda(PGAStrategy(radius=0.0, align=0.0, tradeoff=hp["tradeoff"]))
    run_vlda(PGAStrategy(**hp))
    for image_x, label, domain, image_u in data:
        ref.step(image_x, label, domain, image_u)

    pairs = [
        (vm.prompt_learner.ctx, ref.pl.ctx),
        *[(vm.prompt_learner.domain_ctx[i], ref.pl.srcs[i]) for i in range(k)],
        (vm.prompt_learner.domain_ctx[k], ref.pl.tgt),
    ]
    for ours, theirs in pairs:
        ours, theirs = ours.detach().flatten(), theirs.detach().flatten()
        rel = float((ours - theirs).norm() / theirs.norm())
        assert rel <= 1e-5, rel
    ours = torch.cat([p.detach().flatten() for p in vm.trainable_parameters()])
    far = torch.cat([p.flatten() for p in plain])
    assert float((ours - far).norm() / far.norm()) > 1e-2
