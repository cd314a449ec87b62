"""GRPO rewards from the project's own parser and metrics: every completion is parsed and scored exactly as
`evaluate` scores an answer (pipeline.eval_score.score_answer), then weighted by task (the `grpo` config section).

    grounding   reward_box x IoU with the truth boxes (matched, misses and extra boxes count 0)
    polygon     reward_mask x mask IoU with the truth mask
    counting    reward_count_exact for the exact count, reward_count_near when off by one, else 0
    referring   reward_label for the right label; listing: reward_label x label F1
    negative    reward_negative for a correct "none" (no box) about an absent label, else 0
    any task    reward_parse_failure (a small penalty, <= 0) when the parser rejects the answer
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .coords import Convention, get_convention
from .eval_score import score_answer
from .tasks import Example


@dataclass(frozen=True)
class RewardWeights:
    """Per-task reward weights (the grpo section's reward_* fields)."""

    box: float = 1.0
    mask: float = 1.0
    count_exact: float = 1.0
    count_near: float = 0.5
    label: float = 1.0
    negative: float = 1.0
    parse_failure: float = -0.1

    @classmethod
    def from_config(cls, grpo: Any) -> RewardWeights:
        """The weights of a GrpoSection."""
        return cls(box=grpo.reward_box, mask=grpo.reward_mask, count_exact=grpo.reward_count_exact,
                   count_near=grpo.reward_count_near, label=grpo.reward_label, negative=grpo.reward_negative,
                   parse_failure=grpo.reward_parse_failure)


def reward_from_row(row: dict[str, Any], weights: RewardWeights) -> float:
    """The reward of one scored answer (a score_answer row)."""
    if not row["parse_ok"]:
        return weights.parse_failure
    task = row["task"]
    if task == "grounding":
        return weights.box * float(row["iou"] or 0.0)
    if task == "polygon":
        return weights.mask * float(row["iou"] or 0.0)
    if task == "negative":
        return weights.negative * float(not (row["parsed"] or {}).get("boxes"))
    if task == "counting":
        count, truth = row["count"], row["truth"]["count"]
        if count is None:
            return 0.0
        return weights.count_exact if count == truth else weights.count_near if abs(count - truth) == 1 else 0.0
    return weights.label * float(row["score"] or 0.0)  # referring (label match), listing (F1)


def answer_reward(example: Example, answer: str, convention: Convention | str, weights: RewardWeights) -> float:
    """Score one answer to one example: parse it with the convention, compare with the truth, weight it."""
    return reward_from_row(score_answer(example, answer.strip(), convention), weights)


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversation whose last message holds it."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else completion[-1]
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return ""


class GeometryReward:
    """A TRL reward function: `example_id` (a dataset column) names the Example each completion answers."""

    __name__ = "geometry"

    def __init__(self, examples: list[Example], convention: str, weights: RewardWeights) -> None:
        self.examples = {ex.id: ex for ex in examples}
        self.convention = get_convention(convention)
        self.weights = weights

    def __call__(self, prompts: list[Any], completions: list[Any], example_id: list[str], **kwargs: Any,
                 ) -> list[float]:
        return [answer_reward(self.examples[key], completion_text(completion), self.convention, self.weights)
                for key, completion in zip(example_id, completions, strict=True)]
