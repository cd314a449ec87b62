"""GRPO refinement: continue a finished run (LoRA, QLoRA or full) with TRL's GRPOTrainer and geometry rewards.

    python -m pipeline train --method grpo --from RUN --out RUN2 [--preset grpo|grpo_cpu_demo]

The run is a new run folder with the same machinery as supervised training (pipeline.train): RUN/config.yaml,
progress events (plus the reward mean and spread, KL and completion length), checkpoints with manifests, resume
from the newest valid checkpoint, STOP, geometry evaluation on the val split and the best checkpoint by eval_miou.
The policy starts from the parent's best (else final) weights: its LoRA adapter stays trainable on the same base (the
reference policy is TRL's frozen copy of it), a full fine-tune loads its own weights. Rewards: pipeline/rewards.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .config import TrainConfig, weights_method
from .errors import UserError
from .generation import token_budget
from .hardware import Hardware, detect_hardware
from .models import apply_image_cap
from .plan import resolve_weight_dtype
from .rewards import GeometryReward, RewardWeights
from .rundir import best_checkpoint, final_output
from .tasks import Example
from .train import Plan, TrainResult, _train, dist_info, plan_run, prepare_run_folder

log = logging.getLogger("pipeline.grpo")
# progress.jsonl field for each TRL log key (the log events of a GRPO run carry them beside loss and lr)
PROGRESS_KEYS = {"reward": "reward", "reward_std": "reward_std", "kl": "kl",
                 "completions/mean_length": "completion_length", "frac_reward_zero_std": "frac_reward_zero_std",
                 "entropy": "entropy"}


# -- the policy --------------------------------------------------------------------------------------------------
def parent_weights(cfg: TrainConfig) -> Path:
    """The parent's weights GRPO starts from: its best checkpoint (best.json, manifest verified), as `evaluate`
    scores it, else its final RUN/adapter or RUN/model; UserError naming grpo.parent when it has none."""
    run = Path(cfg.grpo.parent).expanduser() if cfg.grpo.parent else None
    final = final_output(run) if run is not None else None
    folder = (best_checkpoint(run) or final) if run is not None and final is not None else None
    if folder is None:
        raise UserError("grpo.parent: the parent run has no final weights", cfg.grpo.parent or None)
    return folder


def build_policy(cfg: TrainConfig, hw: Hardware, device: str) -> Any:
    """The parent's model, trainable: its adapter on the same (4-bit for QLoRA) base, or its full weights."""
    import torch

    from .models import load_model

    method, weights = weights_method(cfg), parent_weights(cfg)
    dtype = resolve_weight_dtype(cfg, hw)
    if method == "full":
        model = load_model(str(weights), dtype=dtype, device=device)
        for param in model.parameters():
            param.requires_grad_(True)
    else:
        from peft import PeftModel

        base = load_model(cfg.model.name, quantization="4bit" if method == "qlora" else None, dtype=dtype,
                          device=device)
        if method == "qlora":
            from peft import prepare_model_for_kbit_training

            base = prepare_model_for_kbit_training(base, cfg.training.gradient_checkpointing)
        model = PeftModel.from_pretrained(base, str(weights), is_trainable=True)
        for param in model.parameters():  # fp32 adapters, as supervised training keeps them
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
    if cfg.training.gradient_checkpointing and method != "qlora":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


# -- data ----------------------------------------------------------------------------------------------------------
def train_examples(plan: Plan, cfg: TrainConfig) -> list[Example]:
    """The Examples (with their truth) behind plan.train_rows, in the same order."""
    from .dataset import open_dataset
    from .tasks import build_examples, label_set

    train_records, _ = open_dataset(plan.dataset).train_val(cfg.data.train_split)
    built = build_examples(train_records, plan.tasks, plan.spec.convention, seed=int(plan.meta.get("seed", 0)),
                           label_set=label_set(plan.meta), max_pixels=cfg.data.max_pixels)
    by_id = {ex.id: ex for ex in built}
    return [by_id[row["id"]] for row in plan.train_rows]


def prompt_dataset(rows: list[dict[str, Any]], cap: int | None) -> Any:
    """A datasets.Dataset of conversational prompts with their frame (downscaled to `cap`) and example id."""
    from datasets import Dataset

    from .collate import load_image

    def load(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        images = []
        for path, key in zip(batch["image"], batch["example_id"], strict=True):
            image = load_image(path, key)
            if cap and max(image.size) > cap:
                image.thumbnail((cap, cap))
            images.append(image)
        return {**batch, "image": images}

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": row["prompt"]}], "image": row["image"],
                               "example_id": row["id"]} for row in rows])
    return data.with_transform(load)


# -- trainer -------------------------------------------------------------------------------------------------------
def grpo_arguments(cfg: TrainConfig, run: Path, hw: Hardware, has_eval: bool, completion_tokens: int) -> Any:
    """GRPOConfig for the config: the same schedule, checkpoint and evaluation settings as supervised training."""
    from trl import GRPOConfig

    from .train import schedule_arguments

    g = cfg.grpo
    return GRPOConfig(
        **schedule_arguments(cfg, run, hw, has_eval),
        gradient_checkpointing=False,  # build_policy applies training.gradient_checkpointing itself
        num_generations=g.num_generations, max_completion_length=completion_tokens, temperature=g.temperature,
        top_k=g.top_k or 0, beta=g.beta, epsilon=g.epsilon, num_iterations=g.num_iterations, loss_type=g.loss_type,
        scale_rewards=g.scale_rewards, log_completions=False, disable_dropout=True,
    )


def _trainer_class() -> type:
    from transformers import Trainer
    from trl import GRPOTrainer

    from .eval_callback import GeometryEvalCallback

    class StudioGRPOTrainer(GRPOTrainer):
        """TRL's GRPOTrainer with the studio's throughput counter, and evaluation = the geometry evaluation (the
        val split's mIoU, AP50, ...; there is no eval loss in GRPO)."""

        throughput: Any = None

        def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
            inputs = super()._prepare_inputs(generation_batch)  # generates (or reuses) the completions
            training = getattr(self.model, "training", False)
            if self.throughput is not None and training and "completion_mask" in inputs:
                import torch

                self.throughput.add({"attention_mask": torch.cat([inputs["prompt_mask"],
                                                                  inputs["completion_mask"]], dim=1)})
            return inputs

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None,
                     metric_key_prefix: str = "eval") -> dict[str, float]:
            geometry = next((c for c in self.callback_handler.callbacks if isinstance(c, GeometryEvalCallback)),
                            None)
            metrics = geometry.compute(self.model, self.state.global_step) if geometry is not None else {}
            metrics = {**metrics, "epoch": self.state.epoch or 0.0}
            Trainer.log(self, dict(metrics))  # not GRPOTrainer.log: that would take the training averages
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            return None  # the studio writes its own model card at export

    return StudioGRPOTrainer


def completion_budget(cfg: TrainConfig, processor: Any, examples: list[Example]) -> int:
    """grpo.max_completion_length, or the longest training answer in tokens plus a margin (as evaluation)."""
    return cfg.grpo.max_completion_length or token_budget(processor, [ex.answer for ex in examples])


def run_grpo(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """GRPO-refine the parent run as configured (resuming from the newest complete checkpoint when asked)."""
    from .callbacks import RunProgressCallback
    from .models import load_processor

    if config.training.method != "grpo":
        raise UserError(f"training.method: {config.training.method} is not grpo (use pipeline.train)")
    rank, _ = dist_info()
    main = rank == 0
    hw = detect_hardware()
    plan = plan_run(config, resume, hw, check_folder=main)
    processor = load_processor(config.model.name)
    apply_image_cap(processor, config.data.max_image_size, config.data.max_pixels)
    examples = train_examples(plan, config)
    args = grpo_arguments(config, plan.run, hw, bool(plan.eval_rows), completion_budget(config, processor, examples))
    with args.main_process_first(desc="load model"):
        model = build_policy(config, hw, str(args.device))
    with args.main_process_first(desc="run folder"):
        if main:
            prepare_run_folder(config, plan, resume)
    dataset = prompt_dataset(plan.train_rows, config.data.max_image_size)
    reward = GeometryReward(examples, plan.spec.convention, RewardWeights.from_config(config.grpo))

    def make_trainer(callbacks: list[Any]) -> Any:
        for callback in callbacks:
            if isinstance(callback, RunProgressCallback):
                callback.extra = dict(PROGRESS_KEYS)
        log.info("GRPO from %s: %d prompts, %d completions per prompt, up to %d new tokens, beta %g",
                 config.grpo.parent, len(plan.train_rows), config.grpo.num_generations, args.max_completion_length,
                 config.grpo.beta)
        return _trainer_class()(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                                eval_dataset=dataset if plan.eval_rows else None, processing_class=processor,
                                callbacks=callbacks)

    return _train(config, plan, args, processor, model, hw, resume, None, make_trainer)
