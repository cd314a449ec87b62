"""Memory estimator arithmetic, the fits verdict and hardware detection."""

from __future__ import annotations

import pytest

from pipeline.config import TrainConfig
from pipeline.hardware import GpuInfo, Hardware, detect_hardware
from pipeline.memory import (
    CUDA_CONTEXT,
    NF4_BYTES,
    TRAINABLE_BYTES,
    MemoryEstimate,
    adapts_vision,
    estimate_memory,
    fits,
    image_tokens,
    lora_param_count,
)
from pipeline.plan import memory_estimate
from pipeline.registry import get_spec

GIB = 2**30
QWEN = get_spec("qwen2-vl-2b")


def test_breakdown_parts_and_total() -> None:
    est = estimate_memory(QWEN, method="lora", batch_size=2, seq_len=1024)
    assert list(est.parts) == ["weights", "trainable", "activations", "logits", "vision", "fragmentation",
                               "cuda_context"]
    assert est.total == sum(est.parts.values())
    assert est.parts["cuda_context"] == CUDA_CONTEXT
    assert est.parts["weights"] == QWEN.params * 2  # bf16 base
    assert est.parts["logits"] == 2 * 1024 * QWEN.vocab_size * (2 + 8)  # bf16 logits + fp32 upcast + softmax
    assert "| **total** |" in est.table() and est.largest().startswith("activations ")


def test_qlora_weights_are_nf4_with_16bit_embeddings() -> None:
    est = estimate_memory(QWEN, method="qlora", seq_len=512)
    embed = 2 * QWEN.vocab_size * QWEN.hidden_size
    assert est.parts["weights"] == int((QWEN.params - embed) * NF4_BYTES) + embed * 2
    tied = estimate_memory(QWEN, method="qlora", seq_len=512, tied_embeddings=True)
    assert tied.parts["weights"] < est.parts["weights"]


def test_methods_order_and_full_finetune_states() -> None:
    kwargs = {"batch_size": 1, "seq_len": 512, "gradient_checkpointing": True}
    qlora, lora, full = (estimate_memory(QWEN, method=m, **kwargs).total for m in ("qlora", "lora", "full"))
    assert qlora < lora < full
    est = estimate_memory(QWEN, method="full", **kwargs)
    assert est.parts["weights"] == est.parts["gradients"] == QWEN.params * 4  # fp32 master weights
    assert est.parts["optimizer"] == 2 * QWEN.params * 4


def test_lora_trainable_counts_adapters_and_saved_modules() -> None:
    adapters = lora_param_count(QWEN, 16, None)
    assert adapters == QWEN.num_layers * 16 * QWEN.hidden_size * (2 * 4 + 5 * 3)
    plain = estimate_memory(QWEN, method="lora", lora_r=16)
    assert plain.parts["trainable"] == adapters * TRAINABLE_BYTES
    with_head = estimate_memory(QWEN, method="lora", lora_r=16, modules_to_save=["lm_head"])
    assert with_head.parts["trainable"] - plain.parts["trainable"] == QWEN.vocab_size * QWEN.hidden_size * 16


def test_gradient_checkpointing_and_batch_scale_activations() -> None:
    off = estimate_memory(QWEN, method="full", batch_size=1, seq_len=1024)
    on = estimate_memory(QWEN, method="full", batch_size=1, seq_len=1024, gradient_checkpointing=True)
    double = estimate_memory(QWEN, method="full", batch_size=2, seq_len=1024)
    assert on.parts["activations"] < off.parts["activations"] / 5
    assert on.parts["vision"] < off.parts["vision"]
    assert double.parts["activations"] == 2 * off.parts["activations"]
    assert double.parts["logits"] == 2 * off.parts["logits"]


def test_vision_tower_only_keeps_activations_when_trained() -> None:
    assert not adapts_vision(QWEN, "lora", None)  # Qwen2-VL's tower uses qkv/proj: LLaMA names miss it
    assert adapts_vision(QWEN, "lora", ["qkv"]) and adapts_vision(QWEN, "full", None)
    assert adapts_vision(get_spec("smolvlm-256m"), "lora", None)  # SigLIP shares q_proj/k_proj/v_proj
    frozen = estimate_memory(QWEN, method="lora")
    trained = estimate_memory(QWEN, method="lora", lora_targets=["q_proj", "qkv"])
    assert trained.parts["vision"] > 10 * frozen.parts["vision"]


def test_image_cap_reduces_tokens_and_memory() -> None:
    smol = get_spec("smolvlm2-2.2b")
    assert image_tokens(smol) == smol.vision_tokens(2000, 2000)  # uncapped: the processor's full tile grid
    assert image_tokens(smol, 384) == 81 and image_tokens(smol, 448) == 5 * 81
    assert image_tokens(QWEN, 448) == 256 and image_tokens(QWEN, 224) == 64
    big = estimate_memory(QWEN, method="lora", image_size=896, lora_targets=["qkv"]).parts["vision"]
    small = estimate_memory(QWEN, method="lora", image_size=448, lora_targets=["qkv"]).parts["vision"]
    assert big > 3 * small


def test_cpu_estimate_has_no_cuda_overheads() -> None:
    est = estimate_memory(get_spec("tiny-smolvlm"), method="lora", device="cpu", precision="fp32")
    assert "cuda_context" not in est.parts and "fragmentation" not in est.parts
    assert est.total < 50 * 2**20


def test_estimate_from_config_matches_spec_arguments() -> None:
    cfg = TrainConfig()
    cfg.model.name, cfg.training.batch_size, cfg.data.max_length = "qwen2-vl-2b", 2, 768
    cfg.training.gradient_checkpointing = True
    gpu = Hardware("cuda", [GpuInfo("L4", 24 * GIB, 24 * GIB)], True, "12.4", 8, 64 * GIB)
    direct = estimate_memory(QWEN, method="lora", batch_size=2, seq_len=768, gradient_checkpointing=True,
                             precision="bf16", lora_dropout=cfg.lora.dropout)
    assert memory_estimate(cfg, gpu).parts == direct.parts


@pytest.mark.parametrize(("need", "verdict"), [(7 * GIB, "fits"), (7.5 * GIB, "tight"), (8 * GIB, "tight"),
                                               (8 * GIB + 1, "won't fit")])
def test_fits_thresholds(need: float, verdict: str) -> None:
    assert fits(MemoryEstimate({"weights": int(need)}), 8 * GIB) == verdict
    assert fits(int(need), 8 * GIB) == verdict


def test_detect_hardware_describes_this_machine() -> None:
    hw = detect_hardware()
    assert hw.device in ("cpu", "cuda", "mps")
    assert hw.cpu_cores >= 1 and hw.ram > 2**28
    if hw.device == "cuda":
        assert hw.gpus and all(g.total >= g.free > 0 for g in hw.gpus) and hw.cuda_version
    else:
        assert hw.gpus == [] and hw.gpu_memory == 0 and "CPU cores" in hw.summary()
