"""CoOp trained on labelled source only (Zhou et al., IJCV 2022), the source-only prompt baseline.

``logits_k(x) = exp(t) * <f(x), g([SOS][v_1..v_M][CLASS_k][.][EOT])>``; loss = CE on source.
Defaults follow ``KaiyangZhou/CoOp`` (M = 16, random N(0, 0.02²) init, generic context).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor
from torch.nn import functional as F

from vlda.config.search import Distribution, LogUniform
from vlda.methods.base import Method, Task
from vlda.models.backbone import VisionLanguageBackbone
from vlda.models.prompt_learner import PromptConfig, PromptLearner


@dataclass
class CoOpParams:
    n_ctx: int = 16
    class_specific: bool = False
    init: str | None = None
    template: str = "{classname}."


class CoOp(Method):
    name = "coop"
    Params = CoOpParams
    search_space: ClassVar[Mapping[str, Distribution]] = {"optim.lr": LogUniform(3e-4, 3e-2)}

    def __init__(self, backbone: VisionLanguageBackbone, task: Task, params: CoOpParams) -> None:
        super().__init__(backbone, task, params)
        cfg = PromptConfig(
            n_ctx=params.n_ctx, class_specific=params.class_specific, init=params.init,
            template=params.template,
        )
        self.prompt_learner = PromptLearner(backbone, task.prompt_names, ["any"], cfg)

    def losses(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
        text = self.prompt_learner([0])[0]
        logits = self.backbone.logit_scale * self.image_features(source) @ text.t()
        return {"source_ce": F.cross_entropy(logits, source["labels"])}

    def logits(self, features: Tensor) -> Tensor:
        return self.backbone.logit_scale * features @ self.prompt_learner([0])[0].t()
