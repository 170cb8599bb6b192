"""Classifier stages that train in one call: many (arm, seed) stages, one batch of engine runs.

WHY: every (arm, seed) classifier is its own cached stage (a killed study loses nothing; a
changed generator reruns only its arms), but the classifiers of one study phase share their
compiled engine programs and their scoring (one vmapped prediction on GPU/TPU), 45 in the
default study and 63+ in a ratio sweep; batching them also leaves room for training them in one
program once the engine has a member axis (the speed issue). An `ArmGroup`
collects the stages of one study phase (the original arm × seeds; all augmented arms × seeds;
the sweep's fractions × seeds); the first of them that runs trains every member whose stage is
not already cached on disk in one `train_and_score_pairs` call, and each member stage then
writes exactly the result and weights it would have written alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from jaxsynth.study import arms as arms_lib
from jaxsynth.study.stages import Stage, StageContext


@dataclasses.dataclass
class _Member:
    arm_name: str
    seed: int
    build: Callable[..., Any]  # (split, ctx) -> ArmData | str (why it cannot be trained)
    stage: Stage | None = None


class ArmGroup:
    """Members are added by `rare_tumour.classifier_stage(..., group=...)`."""

    def __init__(self) -> None:
        self._members: dict[str, _Member] = {}
        self._done: dict[str, tuple[Any, Any]] = {}

    def add(self, arm_name: str, seed: int, build, stage_name: str) -> None:
        self._members[stage_name] = _Member(arm_name, int(seed), build)

    def attach(self, stage: Stage) -> Stage:
        self._members[stage.name].stage = stage
        return stage

    def result(self, stage_name: str, split, ctx: StageContext):
        """(result dict or a skip reason str, variables or None) of one member stage."""
        if stage_name not in self._done:
            self._train(split, ctx)
        return self._done.pop(stage_name)

    def _cached(self, member: _Member, ctx: StageContext) -> bool:
        """Whether the member's own stage is finished (the runner will not rerun it)."""
        stage = member.stage
        if stage is None or stage.name == ctx.stage.name:
            return False
        return stage.name in ctx.runner.dirs and stage.name not in ctx.runner.pending

    def _train(self, split, ctx: StageContext) -> None:
        todo = [
            (name, m)
            for name, m in self._members.items()
            if name not in self._done and not self._cached(m, ctx)
        ]
        pairs, names = [], []
        for name, m in todo:  # each member builds its arm from what its own stage declares
            arm = m.build(split, ctx.for_stage(m.stage) if m.stage is not None else ctx)
            if isinstance(arm, str):
                self._done[name] = (arm, None)
            else:
                pairs.append((arm, m.seed))
                names.append(name)
        print(
            f"training {len(pairs)} classifiers (one engine run each, compiled once)",
            flush=True,
        )
        for name, out in zip(
            names, arms_lib.train_and_score_pairs(pairs, split, ctx.config.classifier), strict=True
        ):
            self._done[name] = out
