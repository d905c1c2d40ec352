"""Real models from HF transformers, timm and torchvision, built exactly as their users build them
(small configurations), and a comparison of two builds' initializations: same structure, same
ties, the same deterministic values exactly, and the same laws for the random ones.

Left out: torchtitan 0.3, which imports triton and needs a nightly torch, so it cannot be
imported beside torch 2.13.0+cpu.

Nothing here imports a model library at import time (each builder imports its own), and nothing
imports torchinit_ext: a fresh interpreter that builds stock models with these builders never
loads it.
"""

import functools
import glob
import importlib.machinery
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

# No network, ever: every model here is built from a config, never downloaded.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# ---- torchvision without its C extension -----------------------------------------------------

_TORCHVISION_OPS = ("nms", "qnms")
_TORCHVISION_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def ensure_torchvision_importable() -> None:
    """Makes `import torchvision` (and timm, which imports it) work when torchvision's C extension
    cannot load, as the PyPI wheel's CUDA build beside a CPU torch: its _meta_registrations.py
    registers fake kernels for torchvision::nms and ::qnms, which then do not exist. Defines those
    two schemas, with no kernels, so that the import and the pure-Python models work (nms itself
    would not). Idempotent; does nothing when torchvision is absent or already imported, or when
    its extension loads (its ops then exist)."""
    if "torchvision" in sys.modules or all(
        hasattr(torch.ops.torchvision, op) for op in _TORCHVISION_OPS
    ):
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            # _C_stable from torchvision 0.29 on (built on torch's stable ABI), _C before.
            for path in glob.glob(os.path.join(folder, "_C" + suffix)) + glob.glob(
                os.path.join(folder, "_C_stable" + suffix)
            ):
                try:
                    torch.ops.load_library(path)  # what torchvision.extension does
                except OSError:
                    continue
                if all(hasattr(torch.ops.torchvision, op) for op in _TORCHVISION_OPS):
                    return
    for op in _TORCHVISION_OPS:
        if not hasattr(torch.ops.torchvision, op):
            torch.library.define(f"torchvision::{op}", _TORCHVISION_SCHEMA)


# ---- the models ------------------------------------------------------------------------------


def _builder(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """A model builder: the torchvision shim first (transformers and timm import torchvision),
    so that each builder works on its own; a no-op once torchvision is imported."""

    @functools.wraps(fn)
    def build() -> nn.Module:
        ensure_torchvision_importable()
        return fn()

    return build


def _llama(tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config)


@_builder
def hf_llama():
    return _llama(tied=False)


@_builder
def hf_llama_tied():
    return _llama(tied=True)


@_builder
def hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=1024,
        n_positions=256,
        n_embd=128,
        n_layer=2,
        n_head=4,
        bos_token_id=1023,
        eos_token_id=1023,
    )
    return GPT2LMHeadModel(config)  # ties lm_head.weight to transformer.wte.weight


@_builder
def hf_bert():
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=1024,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=256,
    )
    return BertForMaskedLM(config)


@_builder
def hf_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=1024,
        d_model=128,
        d_kv=32,
        d_ff=256,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
    )
    return T5ForConditionalGeneration(config)


def _hf(model: str, config: str, **settings) -> nn.Module:
    """transformers' `model` class, built from its `config` class with these settings."""
    import transformers

    return getattr(transformers, model)(getattr(transformers, config)(**settings))


# A tiny decoder-only LM: two layers, grouped-query attention. (Nothing is sized by
# max_position_embeddings: rotary frequencies depend on the head size alone.)
_DECODER = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def _decoder(model: str, config: str, **settings) -> nn.Module:
    return _hf(model, config, **{**_DECODER, **settings})


@_builder
def hf_mistral():
    return _decoder("MistralForCausalLM", "MistralConfig")


@_builder
def hf_qwen3():
    return _decoder("Qwen3ForCausalLM", "Qwen3Config", head_dim=16)  # Qwen3Config's is 128


@_builder
def hf_qwen3_moe():
    return _decoder(
        "Qwen3MoeForCausalLM",
        "Qwen3MoeConfig",
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
    )


@_builder
def hf_mixtral():
    return _decoder(
        "MixtralForCausalLM", "MixtralConfig", num_local_experts=4, num_experts_per_tok=2
    )


@_builder
def hf_deepseek_v3():
    # Multi-head latent attention, and a dense first layer before the MoE one (with its
    # shared expert and the router's score-correction bias).
    return _decoder(
        "DeepseekV3ForCausalLM",
        "DeepseekV3Config",
        first_k_dense_replace=1,
        moe_intermediate_size=32,
        n_routed_experts=4,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        q_lora_rank=32,
        kv_lora_rank=16,
        qk_nope_head_dim=8,
        qk_rope_head_dim=8,
        v_head_dim=16,
    )


@_builder
def hf_gemma3_text():
    # A sliding-window layer and a global one, each with its own rotary frequencies; the scaled
    # embedding with its padding row (pad_token_id 0).
    return _decoder(
        "Gemma3ForCausalLM",
        "Gemma3TextConfig",
        head_dim=16,
        sliding_window=32,
        layer_types=["sliding_attention", "full_attention"],
    )


@_builder
def hf_phi3():
    # Phi3Config's pad_token_id and eos_token_id (32000) lie outside the tiny vocabulary.
    return _decoder("Phi3ForCausalLM", "Phi3Config", pad_token_id=0, eos_token_id=2)


@_builder
def hf_gpt_oss():
    # YaRN rotary frequencies from 4096 to the default 131072 positions; attention sinks.
    return _decoder(
        "GptOssForCausalLM",
        "GptOssConfig",
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=32,
        layer_types=["sliding_attention", "full_attention"],
    )


@_builder
def hf_mamba():
    return _hf(
        "MambaForCausalLM",
        "MambaConfig",
        vocab_size=512,
        hidden_size=64,
        state_size=8,
        num_hidden_layers=2,
    )


@_builder
def hf_mamba2():
    return _hf(
        "Mamba2ForCausalLM",
        "Mamba2Config",
        vocab_size=512,
        hidden_size=64,
        state_size=8,
        num_hidden_layers=2,
        num_heads=8,
        head_dim=16,  # num_heads * head_dim = expand (2) * hidden_size
        n_groups=1,
    )


@_builder
def hf_whisper():
    return _hf(
        "WhisperForConditionalGeneration",  # ties proj_out to the decoder's embed_tokens
        "WhisperConfig",
        vocab_size=512,
        num_mel_bins=16,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=64,  # the encoder's sinusoidal positions
        max_target_positions=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )


# Tiny text and vision towers, for the two-tower models.
_TOWER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4)
_TEXT_TOWER = dict(
    _TOWER,
    vocab_size=512,
    max_position_embeddings=32,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
_VISION_TOWER = dict(_TOWER, image_size=32, patch_size=8)


@_builder
def hf_clip():
    return _hf(
        "CLIPModel",
        "CLIPConfig",
        text_config=_TEXT_TOWER,
        vision_config=_VISION_TOWER,
        projection_dim=32,
    )


@_builder
def hf_siglip():
    # The vision tower's attention-pooling head (an nn.MultiheadAttention) included.
    return _hf("SiglipModel", "SiglipConfig", text_config=_TEXT_TOWER, vision_config=_VISION_TOWER)


@_builder
def hf_wav2vec2():
    # The pretraining head: the Gumbel quantizer's codevectors and its projections; the
    # positional convolution under weight norm; the masked-time embedding.
    return _hf(
        "Wav2Vec2ForPreTraining",
        "Wav2Vec2Config",
        vocab_size=32,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32, 32),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        num_codevectors_per_group=16,
        codevector_dim=32,
        proj_codevector_dim=32,
    )


# timm's models by name, with the arguments that shrink them (none: full size). MaxViT and
# CoAtNet (one timm family, MaxxVit): one block per stage, narrow stages.
_MAXXVIT_SMALL = dict(
    embed_dim=(16, 32, 64, 128), depths=(1, 1, 1, 1), stem_width=16, transformer_dim_head=8
)
_TIMM = {
    "vit_base_patch16_224": dict(depth=2),
    "convnext_tiny": dict(depths=(1, 1, 1, 1)),
    "resnet50": {},
    "efficientnet_b0": {},
    "swin_tiny_patch4_window7_224": dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
    "deit_tiny_patch16_224": dict(depth=2),
    "eva02_tiny_patch14_224": dict(depth=2),
    "maxvit_tiny_tf_224": _MAXXVIT_SMALL,
    "coatnet_nano_rw_224": _MAXXVIT_SMALL,
    "mobilenetv3_small_050": {},
    "regnety_002": {},
}


def _timm(name: str, kwargs: dict) -> Callable[[], nn.Module]:
    def build():
        import timm

        return timm.create_model(name, **kwargs)

    build.__name__ = build.__qualname__ = f"timm_{name}"
    return _builder(build)


@_builder
def torchvision_resnet50():
    from torchvision.models import resnet50

    return resnet50()


@_builder
def torchvision_vit_b_16():
    # vit_b_16() is this class with num_layers=12; two layers keep every init code path.
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=224, patch_size=16, num_layers=2, num_heads=12, hidden_dim=768, mlp_dim=3072
    )


@_builder
def torchvision_convnext_tiny():
    # convnext_tiny() is this class with (3, 3, 9, 3) blocks; one per stage keeps every init path.
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    stages = [(96, 192), (192, 384), (384, 768), (768, None)]
    return ConvNeXt([CNBlockConfig(i, o, 1) for i, o in stages], stochastic_depth_prob=0.1)


@_builder
def torchvision_swin_t():
    # swin_t() is this class with embed_dim 96, (2, 2, 6, 2) blocks and (3, 6, 12, 24) heads.
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=32,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        window_size=[7, 7],
        stochastic_depth_prob=0.2,
    )


@_builder
def torchvision_maxvit_t():
    # maxvit_t() is this class with 64-wide stem, (64, 128, 256, 512) channels, (2, 2, 5, 2)
    # blocks and 32-wide heads.
    from torchvision.models.maxvit import MaxVit

    return MaxVit(
        input_size=(224, 224),
        stem_channels=16,
        partition_size=7,
        block_channels=[16, 32, 64, 128],
        block_layers=[1, 1, 1, 1],
        head_dim=8,
        stochastic_depth_prob=0.2,
    )


@_builder
def torchvision_densenet121():
    # densenet121() is this class with growth rate 32, (6, 12, 24, 16) layers, 64 stem features.
    from torchvision.models.densenet import DenseNet

    return DenseNet(growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16)


@_builder
def torchvision_googlenet():
    # Its inception widths are fixed. init_weights=True is what None (the default) does, less
    # the warning that says so.
    from torchvision.models import googlenet

    return googlenet(init_weights=True)


@_builder
def torchvision_efficientnet_b0():
    # efficientnet_b0() is this class with seven MBConv stages; the first two (one without an
    # expansion convolution, one with) keep every init code path.
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig

    stages = [MBConvConfig(1, 3, 1, 32, 16, 1), MBConvConfig(6, 3, 2, 16, 24, 1)]
    return EfficientNet(stages, dropout=0.2)


@_builder
def torchvision_mobilenet_v3_small():
    # mobilenet_v3_small() is this class with eleven blocks and a 1024-wide last layer; two (one
    # with squeeze-excitation and ReLU, one without and hard-swish) keep every init code path.
    from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3

    blocks = [
        InvertedResidualConfig(16, 3, 16, 16, True, "RE", 2, 1, 1.0),
        InvertedResidualConfig(16, 3, 72, 24, False, "HS", 2, 1, 1.0),
    ]
    return MobileNetV3(blocks, last_channel=128)


def _diffusers(model: str, **config) -> nn.Module:
    import diffusers

    return getattr(diffusers, model)(**config)


@_builder
def diffusers_unet():
    """A tiny Stable Diffusion UNet: two resolutions, cross-attention in one."""
    return _diffusers(
        "UNet2DConditionModel",
        sample_size=32,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


@_builder
def diffusers_autoencoder_kl():
    return _diffusers(
        "AutoencoderKL",
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        latent_channels=4,
        norm_num_groups=8,
    )


@_builder
def diffusers_dit():
    """A tiny DiT: sin-cos position embeddings computed in its constructor, adaLN-Zero blocks."""
    return _diffusers(
        "DiTTransformer2DModel",
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    library: str  # the module that must import, else the model's tests skip
    build: Callable[[], nn.Module]


def _by_name(*specs: ModelSpec) -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in specs}


MODELS = _by_name(
    ModelSpec("hf_llama", "transformers", hf_llama),
    ModelSpec("hf_llama_tied", "transformers", hf_llama_tied),
    ModelSpec("hf_gpt2", "transformers", hf_gpt2),
    ModelSpec("hf_bert", "transformers", hf_bert),
    ModelSpec("hf_t5", "transformers", hf_t5),
    ModelSpec("hf_mistral", "transformers", hf_mistral),
    ModelSpec("hf_qwen3", "transformers", hf_qwen3),
    ModelSpec("hf_qwen3_moe", "transformers", hf_qwen3_moe),
    ModelSpec("hf_mixtral", "transformers", hf_mixtral),
    ModelSpec("hf_deepseek_v3", "transformers", hf_deepseek_v3),
    ModelSpec("hf_gemma3_text", "transformers", hf_gemma3_text),
    ModelSpec("hf_phi3", "transformers", hf_phi3),
    ModelSpec("hf_gpt_oss", "transformers", hf_gpt_oss),
    ModelSpec("hf_mamba", "transformers", hf_mamba),
    ModelSpec("hf_mamba2", "transformers", hf_mamba2),
    ModelSpec("hf_whisper", "transformers", hf_whisper),
    ModelSpec("hf_clip", "transformers", hf_clip),
    ModelSpec("hf_siglip", "transformers", hf_siglip),
    ModelSpec("hf_wav2vec2", "transformers", hf_wav2vec2),
    *(ModelSpec(f"timm_{name}", "timm", _timm(name, kwargs)) for name, kwargs in _TIMM.items()),
    ModelSpec("torchvision_resnet50", "torchvision", torchvision_resnet50),
    ModelSpec("torchvision_vit_b_16", "torchvision", torchvision_vit_b_16),
    ModelSpec("torchvision_convnext_tiny", "torchvision", torchvision_convnext_tiny),
    ModelSpec("torchvision_swin_t", "torchvision", torchvision_swin_t),
    ModelSpec("torchvision_maxvit_t", "torchvision", torchvision_maxvit_t),
    ModelSpec("torchvision_densenet121", "torchvision", torchvision_densenet121),
    ModelSpec("torchvision_googlenet", "torchvision", torchvision_googlenet),
    ModelSpec("torchvision_efficientnet_b0", "torchvision", torchvision_efficientnet_b0),
    ModelSpec("torchvision_mobilenet_v3_small", "torchvision", torchvision_mobilenet_v3_small),
    ModelSpec("diffusers_unet", "diffusers", diffusers_unet),
    ModelSpec("diffusers_autoencoder_kl", "diffusers", diffusers_autoencoder_kl),
    ModelSpec("diffusers_dit", "diffusers", diffusers_dit),
)


def require(spec: ModelSpec) -> None:
    """Imports the model's library, or skips the calling test, saying which library is missing.
    (The torchvision shim first: timm imports torchvision.)"""
    ensure_torchvision_importable()
    pytest.importorskip(spec.library, reason=f"{spec.name} needs {spec.library}")


# ---- the bench's models, at realistic sizes ---------------------------------------------------


@_builder
def hf_llama_271m():
    return _hf(  # untied head
        "LlamaForCausalLM",
        "LlamaConfig",
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
    )


@_builder
def hf_qwen2_05b_shape():
    return _hf(  # 494M parameters, tied head
        "Qwen2ForCausalLM",
        "Qwen2Config",
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )


@_builder
def hf_gpt2_124m():
    return _hf("GPT2LMHeadModel", "GPT2Config")


@_builder
def hf_mistral_resized():
    """A tiny Mistral whose builder resizes its vocabulary: transformers' mean resizing reads the
    embedding's values while building."""
    model = _hf(
        "MistralForCausalLM",
        "MistralConfig",
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model.resize_token_embeddings(model.config.vocab_size + 64)
    return model


def _torchvision(name: str) -> Callable[[], nn.Module]:
    """torchvision's full-size `name` model, as torchvision.models.<name>() builds it."""

    def build():
        import torchvision.models

        return getattr(torchvision.models, name)()

    build.__name__ = build.__qualname__ = f"torchvision_{name}"
    return _builder(build)


# benchmarks/models.py's real-model rows, by row name: what users build, at the sizes they build.
BENCH_MODELS = _by_name(
    ModelSpec("HF Llama 271M", "transformers", hf_llama_271m),
    ModelSpec("HF Qwen2-0.5B shape", "transformers", hf_qwen2_05b_shape),
    ModelSpec("HF GPT-2 124M", "transformers", hf_gpt2_124m),
    ModelSpec("HF Mistral tiny, resized vocab", "transformers", hf_mistral_resized),
    ModelSpec("timm ViT-B/16", "timm", _timm("vit_base_patch16_224", {})),
    ModelSpec("timm EfficientNet-B0", "timm", _timm("efficientnet_b0", {})),
    ModelSpec("timm MobileNetV3-S", "timm", _timm("mobilenetv3_small_100", {})),
    ModelSpec("torchvision ResNet-50", "torchvision", torchvision_resnet50),
    ModelSpec("torchvision VGG-16", "torchvision", _torchvision("vgg16")),
    # Small models of many layers: per-layer costs, not fills, dominate.
    ModelSpec("torchvision MobileNetV3-S", "torchvision", _torchvision("mobilenet_v3_small")),
    ModelSpec("torchvision DenseNet-121", "torchvision", _torchvision("densenet121")),
    ModelSpec("torchvision EfficientNet-B0", "torchvision", _torchvision("efficientnet_b0")),
    ModelSpec("torchvision RegNetY-400MF", "torchvision", _torchvision("regnet_y_400mf")),
    ModelSpec("diffusers UNet2DCondition tiny", "diffusers", diffusers_unet),
    ModelSpec("diffusers AutoencoderKL tiny", "diffusers", diffusers_autoencoder_kl),
    ModelSpec("diffusers DiT tiny", "diffusers", diffusers_dit),
)


def installed(specs: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
    """The specs whose library imports (the torchvision shim first: timm imports torchvision)."""
    ensure_torchvision_importable()
    return {name: s for name, s in specs.items() if importlib.util.find_spec(s.library)}


# ---- comparing initializations ---------------------------------------------------------------

# Three stock builds: an element equal in all three is deterministic. (With two, a float32
# normal(0, 0.02) element of a 2.4M-element tensor matches by chance now and then.)
STOCK_SEEDS = (11, 12, 13)
MAX_SAMPLE = 65_536  # random elements per tensor that the statistics look at
ALPHA = 1e-4  # family-wise: each tensor's tests get ALPHA / tensors (Bonferroni), at most 1e-6
# Below this many random elements (a gpt-oss layer's 4 attention sinks, its router's 4 biases), the
# moments' normal approximations fail (stock's 4 values estimate the fourth moment), and so does
# KS's asymptotic p-value (4 values all below stock's 4 give p = 0; exactly, 2/70): the exact KS
# test alone. (4 values cannot fail it at ALPHA: they show no law.)
SMALL_SAMPLE = 100


def named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer under every name that holds it (tied ones under each)."""
    return {
        **dict(model.named_parameters(remove_duplicate=False)),
        **dict(model.named_buffers(remove_duplicate=False)),
    }


def _unique(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each tensor once, under its first name."""
    out, seen = {}, set()
    for name, tensor in named_tensors(model).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[name] = tensor.detach()
    return out


def _groups(named: dict[str, torch.Tensor], key) -> set[frozenset[str]]:
    """The names that share key(tensor), for keys held by more than one name."""
    by_key: dict[object, set[str]] = {}
    for name, tensor in named.items():
        k = key(tensor)
        if k is not None:
            by_key.setdefault(k, set()).add(name)
    return {frozenset(names) for names in by_key.values() if len(names) > 1}


def _storage(tensor: torch.Tensor):
    if tensor.numel() == 0 or tensor.is_meta:
        return None
    return tensor.untyped_storage().data_ptr()


@dataclass
class Structure:
    """What two builds must share exactly, whatever the seed."""

    kinds: dict[str, tuple]  # name -> (parameter?, dtype, shape, requires_grad, device type)
    state_dict_keys: tuple[str, ...]
    tied: set[frozenset[str]]  # names holding one tensor object
    shared_storage: set[frozenset[str]]  # names whose tensors share memory

    FIELDS = ("is a parameter", "dtype", "shape", "requires_grad", "device")

    @classmethod
    def of(cls, model: nn.Module) -> "Structure":
        params = dict(model.named_parameters(remove_duplicate=False))
        named = named_tensors(model)
        kinds = {
            name: (name in params, t.dtype, tuple(t.shape), t.requires_grad, t.device.type)
            for name, t in named.items()
        }
        return cls(
            kinds,
            tuple(model.state_dict().keys()),
            _groups(named, id),
            _groups(named, _storage),
        )

    def problems(self, other: "Structure") -> list[str]:
        """How `other` differs from this (stock's) structure."""
        out = []
        missing, extra = self.kinds.keys() - other.kinds.keys(), other.kinds.keys() - self.kinds
        if missing or extra:
            out.append(f"tensor names differ: missing {sorted(missing)}, extra {sorted(extra)}")
        for name in self.kinds.keys() & other.kinds.keys():
            for what, want, have in zip(self.FIELDS, self.kinds[name], other.kinds[name]):
                if want != have:
                    out.append(f"{name}: {what} {have}, stock {want}")
        if self.state_dict_keys != other.state_dict_keys:
            out.append(
                f"state_dict keys differ: {other.state_dict_keys} vs stock {self.state_dict_keys}"
            )
        for what, want, have in [
            ("tied (one tensor object)", self.tied, other.tied),
            ("sharing storage", self.shared_storage, other.shared_storage),
        ]:
            if want != have:
                out.append(
                    f"{what}: stock has {sorted(map(sorted, want - have))} that this build "
                    f"lacks, this build has {sorted(map(sorted, have - want))} that stock lacks"
                )
        return out


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's values as a flat numpy array (a view where it can be). Elementwise work is
    done in numpy: on these machines it is several times faster than torch's on fresh memory."""
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()  # exact; numpy has no bfloat16
    return tensor.numpy().reshape(-1)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise a == b, NaN equal to NaN."""
    equal = a == b
    if a.dtype.kind in "fc":
        equal |= np.isnan(a) & np.isnan(b)
    return equal


@dataclass
class TensorReference:
    """Stock's values of one tensor: the deterministic elements, and a sample of the random ones
    with its moments."""

    fixed: np.ndarray | None  # flat indices of the deterministic elements; None: all of them
    fixed_values: np.ndarray  # their values
    sampled: np.ndarray  # flat indices of the random elements sampled (empty: none random)
    random_count: int
    sample: np.ndarray  # stock's values there, float64
    moments: tuple[float, float, float]  # mean, variance, fourth central moment of the sample

    @classmethod
    def of(cls, builds: list[torch.Tensor], rng: np.random.Generator) -> "TensorReference":
        flat = [_numpy(b) for b in builds]
        fixed_mask = np.ones(flat[0].shape, dtype=bool)
        for other in flat[1:]:
            fixed_mask &= _same(flat[0], other)
        if fixed_mask.all():
            none = np.empty(0, dtype=np.int64)
            return cls(None, flat[0].copy(), none, 0, np.empty(0), (0.0, 0.0, 0.0))
        fixed = np.flatnonzero(fixed_mask)
        sampled = np.flatnonzero(~fixed_mask)
        random_count = len(sampled)
        if random_count > MAX_SAMPLE:
            sampled = np.sort(sampled[rng.choice(random_count, MAX_SAMPLE, replace=False)])
        sample = flat[0][sampled].astype(np.float64)
        mean = sample.mean()
        moments = (mean, sample.var(), np.mean((sample - mean) ** 4))
        return cls(fixed, flat[0][fixed], sampled, random_count, sample, moments)


@dataclass
class Reference:
    """Stock's initialization of one model, from builds under different torch.manual_seed."""

    structure: Structure
    tensors: dict[str, TensorReference] = field(default_factory=dict)  # by first name


def assert_stock_init() -> None:
    """Stock references must be built by stock torch.nn.init and Tensor methods, not under a
    patch (which may swap the functions, or only their code): checks their values against
    torch.rand/torch.randn, which draw the same numbers from the same generator."""

    def gen():
        return torch.Generator().manual_seed(5)

    empty = torch.empty(64)
    checks = {
        "torch.nn.init.uniform_": (nn.init.uniform_(empty.clone(), generator=gen()), torch.rand),
        "torch.nn.init.normal_": (nn.init.normal_(empty.clone(), generator=gen()), torch.randn),
        "Tensor.uniform_": (empty.clone().uniform_(generator=gen()), torch.rand),
        "Tensor.normal_": (empty.clone().normal_(generator=gen()), torch.randn),
    }
    for what, (values, draw) in checks.items():
        assert torch.equal(values, draw(64, generator=gen())), (
            f"{what} is not stock's (patched?): a stock reference cannot be built now"
        )


@functools.cache
def stock_reference(build: Callable[[], nn.Module], seeds=STOCK_SEEDS) -> Reference:
    """Builds the model with stock torch under each seed: elements equal in every build are
    deterministic (constants, padding rows, position ids, rotary frequencies), the others random.
    Cached per builder."""
    assert_stock_init()
    builds = []
    for seed in seeds:
        torch.manual_seed(seed)
        builds.append(build())
    structure = Structure.of(builds[0])
    for other in builds[1:]:
        mismatch = structure.problems(Structure.of(other))
        assert not mismatch, f"stock builds differ in structure across seeds: {mismatch}"
    reference = Reference(structure)
    unique = [_unique(b) for b in builds]
    rng = np.random.default_rng(0)
    for name in unique[0]:
        reference.tensors[name] = TensorReference.of([u[name] for u in unique], rng)
    return reference


def _law_problems(name: str, ref: TensorReference, have: np.ndarray, alpha: float) -> list[str]:
    """Whether `have` is drawn from the law that drew stock's sample: two-sample KS, and mean and
    variance within z standard errors (from stock's moments, as under the null hypothesis); below
    SMALL_SAMPLE values, the exact KS test alone."""
    if not np.all(np.isfinite(have)):
        return [f"{name}: {np.count_nonzero(~np.isfinite(have))} non-finite random values"]
    n = len(have)
    if n < 2:
        return []
    z = scipy.stats.norm.isf(alpha / 2)
    mean_w, var_w, m4_w = ref.moments
    mean_h, var_h = have.mean(), have.var()
    described = (
        f"(n={n}; mean {mean_h:.4g} vs stock {mean_w:.4g}, std {math.sqrt(var_h):.4g} vs stock "
        f"{math.sqrt(var_w):.4g})"
    )
    failed = []
    small = n < SMALL_SAMPLE
    p = scipy.stats.ks_2samp(ref.sample, have, method="exact" if small else "asymp").pvalue
    if not p > alpha:
        failed.append(f"KS p={p:.3g} <= {alpha:.3g}")
    tiny = 1e-12 * max(abs(mean_w), math.sqrt(var_w), 1e-30)
    if not small and abs(mean_h - mean_w) > z * math.sqrt(2 * var_w / n) + tiny:
        failed.append(f"mean off by more than {z:.2f} standard errors")
    if (
        not small
        and abs(var_h - var_w) > z * math.sqrt(2 * max(m4_w - var_w**2, 0.0) / n) + tiny**2
    ):
        failed.append(f"variance off by more than {z:.2f} standard errors")
    return (
        [f"{name}: random values of another law: {', '.join(failed)} {described}"] if failed else []
    )


def init_problems(
    reference: Reference, model: nn.Module, skip: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    """Everything in which `model`'s initialization differs from stock's (empty: none), by
    tensor name. Tensors named in `skip` (under any of their names) get no value checks."""
    out = reference.structure.problems(Structure.of(model))
    names = named_tensors(model)
    skipped = {id(names[s]) for s in skip if s in names}
    checked = [n for n in reference.tensors if n in names and id(names[n]) not in skipped]
    random_count = sum(reference.tensors[n].random_count > 0 for n in checked)
    alpha = min(1e-6, ALPHA / max(random_count, 1))
    for name in checked:
        ref, values = reference.tensors[name], names[name].detach()
        kind = reference.structure.kinds[name]
        if (values.dtype, tuple(values.shape)) != kind[1:3]:
            continue  # a structure problem, already reported
        if values.is_meta:
            out.append(f"{name}: still on the meta device")
            continue
        flat = _numpy(values)
        fixed = flat if ref.fixed is None else flat[ref.fixed]
        wrong = np.flatnonzero(~_same(fixed, ref.fixed_values))
        if len(wrong):
            first = wrong[0]
            index = first if ref.fixed is None else ref.fixed[first]
            index = tuple(int(i) for i in np.unravel_index(index, values.shape))
            out.append(
                f"{name}: {len(wrong)} of {len(fixed)} deterministic elements differ from stock "
                f"(first at {index}: {fixed[first].item()!r}, stock "
                f"{ref.fixed_values[first].item()!r})"
            )
        if ref.random_count == 0:
            continue
        if not values.is_floating_point():
            out.append(f"{name}: random {values.dtype} values, which these checks do not cover")
            continue
        out += _law_problems(name, ref, flat[ref.sampled].astype(np.float64), alpha)
    return out


def assert_same_init(
    stock_build: Callable[[], nn.Module],
    model: nn.Module,
    skip: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Asserts that `model`, built some other way, is initialized as stock_build() is by stock
    torch: the same tensor names, kinds, dtypes, shapes, ties and storage sharing; deterministic
    elements exactly equal; random elements from the same law. Lists every difference, by
    tensor name."""
    problems = init_problems(stock_reference(stock_build), model, skip)
    assert not problems, "initialization differs from stock:\n  " + "\n  ".join(problems)
