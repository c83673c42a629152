"""Model specs: the architecture facts every memory term needs, read from a config.json.

A model is resolved (``resolve_model``) from, in order:
1. a shipped profile in ``profiles/models/`` by Hugging Face id (case-insensitive) or alias;
2. a local directory holding ``config.json``, or a path to a ``config.json``;
3. a Hub id through transformers' ``AutoConfig`` (Hub or local HF cache), imported lazily.

Parameter counts follow the module structure of the transformers implementation of each
``model_type`` (embeddings, attention, MLP or experts, norms, LM head, tied or not), so that
``ParamCounts.total`` equals ``sum(p.numel() for p in model.parameters())``.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import ConfigError, UnknownModelError
from .config_contract import check_config, read_config_json
from .shipped import PROFILES_DIR, json_files, require

MODELS_DIR = PROFILES_DIR.joinpath("models")

# model_type -> architecture facts that config.json does not spell out.
# norms_per_layer: RMSNorms per decoder layer (Gemma 2/3 add pre/post feed-forward norms).
# qkv_bias: q/k/v projections carry a bias (Qwen2). qk_norm: per-head RMSNorm on q and k.
# fused_qkv / fused_gate_up: Phi-3 style fused projections (matters for LoRA target names).
_ARCH_FACTS = {
    "llama": dict(norms_per_layer=2),
    "mistral": dict(norms_per_layer=2),
    "qwen2": dict(norms_per_layer=2, qkv_bias=True),
    "qwen3": dict(norms_per_layer=2, qk_norm=True),
    "qwen3_moe": dict(norms_per_layer=2, qk_norm=True),
    "qwen2_moe": dict(norms_per_layer=2, qkv_bias=True),
    "gemma": dict(norms_per_layer=2),
    # Gemma 2: whether it trains with eager attention depends on the transformers release
    # (versions.transformers_eager_attention); trainer_memory sets ModelSpec.eager_attention.
    "gemma2": dict(norms_per_layer=4),
    "gemma3_text": dict(norms_per_layer=4, qk_norm=True),
    "gemma3": dict(norms_per_layer=4, qk_norm=True),
    "phi3": dict(norms_per_layer=2, fused_qkv=True, fused_gate_up=True),
    "deepseek_v2": dict(norms_per_layer=2),
    "deepseek_v3": dict(norms_per_layer=2),
    # gpt-oss (transformers models/gpt_oss/modeling_gpt_oss.py): attention_bias on q/k/v *and* o_proj,
    # one learned sink logit per head and layer (``sinks``), a router with bias, expert biases
    # (gate_up_proj_bias, down_proj_bias)
    "gpt_oss": dict(norms_per_layer=2, o_bias=True, attention_sinks=True, router_bias=True, expert_bias=True),
    # Qwen3-Next (models/qwen3_next/modeling_qwen3_next.py): full-attention layers have an output
    # gate (q_proj is 2 x heads x head_dim wide) and q/k norms; the others are gated delta-net layers
    "qwen3_next": dict(norms_per_layer=2, qk_norm=True, attn_output_gate=True),
    # Qwen2.5-VL's text decoder is Qwen2 (q/k/v bias)
    "qwen2_5_vl": dict(norms_per_layer=2, qkv_bias=True),
    "qwen2_5_vl_text": dict(norms_per_layer=2, qkv_bias=True),
}


@dataclass(frozen=True)
class LinearShape:
    """One kind of ``nn.Linear`` in a decoder layer: ``count`` copies of ``in -> out``.

    ``layers`` is how many decoder layers hold it; ``group`` is "attention", "mlp", "experts"
    or "router". LoRA, NF4 quantisation and the optimizer all iterate over these.
    """

    name: str
    in_features: int
    out_features: int
    group: str
    layers: int
    count: int = 1  # per layer (e.g. number of experts)
    bias: bool = False

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features * self.count * self.layers

    @property
    def bias_params(self) -> int:
        return (self.out_features * self.count * self.layers) if self.bias else 0


@dataclass(frozen=True)
class ParamCounts:
    """Exact parameter counts per kind (tied LM head counted once, in ``embeddings``)."""

    embeddings: int
    attention: int
    mlp: int
    experts: int
    router: int
    norms: int
    lm_head: int
    vision: int

    @property
    def total(self) -> int:
        return (self.embeddings + self.attention + self.mlp + self.experts + self.router
                + self.norms + self.lm_head + self.vision)

    @property
    def active(self) -> int:
        """Parameters of the text decoder (what trains and what vLLM must hold for text)."""
        return self.total - self.vision

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in
             ("embeddings", "attention", "mlp", "experts", "router", "norms", "lm_head", "vision")}
        d["total"] = self.total
        return d


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a causal LM's text decoder, in the units memory terms need."""

    model_id: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    dtype: str = "bfloat16"
    norms_per_layer: int = 2
    qkv_bias: bool = False
    qk_norm: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    # training keeps eager attention's seq^2 scores: a fact of the transformers release, not of
    # config.json; memory.trainer sets it from versions.transformers_eager_attention
    eager_attention: bool = False
    # per-layer attention kind: "full_attention" or "sliding_attention"
    layer_types: tuple = ()
    sliding_window: int | None = None
    final_logit_softcapping: float | None = None
    # mixture of experts (0 = dense)
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    moe_layers: tuple = ()  # indices of layers whose MLP is an expert block
    # multi-head latent attention (DeepSeek V2/V3); 0 = ordinary attention
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    # gpt-oss: o_proj bias, per-head attention sinks, router and expert biases
    o_bias: bool = False
    attention_sinks: bool = False
    router_bias: bool = False
    expert_bias: bool = False
    # Qwen3-Next: gated output (q_proj doubled) on the full-attention layers
    attn_output_gate: bool = False
    # gated delta-net (linear attention) layers, layer_types "linear_attention" (Qwen3-Next)
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel_dim: int = 0
    # experts stored in a 4-bit checkpoint format (gpt-oss: "mxfp4"); the rest of the model is 16-bit
    expert_quantization: str | None = None
    vision_params: int = 0
    source: str = ""
    quantization: str | None = None  # checkpoint's own quantisation (awq, gptq, fp8, bitsandbytes)
    raw_config: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    # -- derived shapes -------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def q_dim(self) -> int:
        """Width of the concatenated query heads (not always ``hidden_size``: Mistral-Small, Gemma).

        MLA: ``heads x (qk_nope_head_dim + qk_rope_head_dim)`` (``head_dim`` is that query/key head
        width there; the cached latent is ``mla_latent_dim``)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the keys of all KV heads (= the values, except MLA: see ``v_dim``).

        MLA: transformers' DeepSeek-V2/V3 attention expands the latent into per-head keys of
        ``qk_nope + qk_rope`` for every query head (``num_kv_heads = num_attention_heads``)."""
        return self.num_kv_heads * self.head_dim

    @property
    def v_dim(self) -> int:
        """Width of the values of all KV heads (MLA: ``heads x v_head_dim``; else ``kv_dim``)."""
        if self.is_mla:
            return self.num_kv_heads * self.v_head_dim
        return self.kv_dim

    @property
    def attn_out_dim(self) -> int:
        """Width of the attention output (o_proj's input): ``q_dim``; MLA ``heads x v_head_dim``."""
        if self.is_mla:
            return self.num_attention_heads * self.v_head_dim
        return self.q_dim

    @property
    def mla_latent_dim(self) -> int:
        """MLA's cached latent per token and layer: ``kv_lora_rank + qk_rope_head_dim`` (0 otherwise)."""
        return self.kv_lora_rank + self.qk_rope_head_dim if self.is_mla else 0

    @property
    def num_sliding_layers(self) -> int:
        return sum(1 for t in self.layer_types if t == "sliding_attention")

    @property
    def num_linear_attention_layers(self) -> int:
        """Gated delta-net layers (Qwen3-Next): a recurrent state per sequence, no KV per token."""
        return sum(1 for t in self.layer_types if t == "linear_attention")

    @property
    def is_hybrid_linear(self) -> bool:
        return self.num_linear_attention_layers > 0

    @property
    def num_attention_layers(self) -> int:
        """Layers with softmax attention (full or sliding): the ones holding a KV cache."""
        return self.num_layers - self.num_linear_attention_layers

    @property
    def num_full_attention_layers(self) -> int:
        return self.num_layers - self.num_sliding_layers - self.num_linear_attention_layers

    @property
    def linear_key_dim(self) -> int:
        return self.linear_num_key_heads * self.linear_key_head_dim

    @property
    def linear_value_dim(self) -> int:
        return self.linear_num_value_heads * self.linear_value_head_dim

    @property
    def linear_conv_dim(self) -> int:
        """Channels of the gated delta-net's depthwise conv1d: q, k and v (``2 x key_dim + value_dim``)."""
        return 2 * self.linear_key_dim + self.linear_value_dim

    @property
    def num_dense_mlp_layers(self) -> int:
        return self.num_layers - len(self.moe_layers)

    def linear_shapes(self) -> tuple[LinearShape, ...]:
        """Every ``nn.Linear`` of the decoder except ``lm_head``, grouped by kind."""
        h, L = self.hidden_size, self.num_attention_layers
        shapes: list[LinearShape] = []
        if self.is_mla:
            qk_head = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                shapes += [LinearShape("q_a_proj", h, self.q_lora_rank, "attention", L),
                           LinearShape("q_b_proj", self.q_lora_rank, self.num_attention_heads * qk_head, "attention", L)]
            else:
                shapes.append(LinearShape("q_proj", h, self.num_attention_heads * qk_head, "attention", L))
            shapes += [
                LinearShape("kv_a_proj_with_mqa", h, self.kv_lora_rank + self.qk_rope_head_dim, "attention", L),
                LinearShape("kv_b_proj", self.kv_lora_rank,
                            self.num_attention_heads * (self.qk_nope_head_dim + self.v_head_dim), "attention", L),
                LinearShape("o_proj", self.num_attention_heads * self.v_head_dim, h, "attention", L),
            ]
        elif self.fused_qkv:
            shapes += [LinearShape("qkv_proj", h, self.q_dim + 2 * self.kv_dim, "attention", L, bias=self.qkv_bias),
                       LinearShape("o_proj", self.q_dim, h, "attention", L)]
        else:
            q_out = self.q_dim * (2 if self.attn_output_gate else 1)
            shapes += [LinearShape("q_proj", h, q_out, "attention", L, bias=self.qkv_bias),
                       LinearShape("k_proj", h, self.kv_dim, "attention", L, bias=self.qkv_bias),
                       LinearShape("v_proj", h, self.kv_dim, "attention", L, bias=self.qkv_bias),
                       LinearShape("o_proj", self.q_dim, h, "attention", L, bias=self.o_bias)]
        gdn = self.num_linear_attention_layers
        if gdn:
            # Qwen3NextGatedDeltaNet: in_proj_qkvz (q, k, v, z), in_proj_ba (beta, a per value head), out_proj
            shapes += [LinearShape("in_proj_qkvz", h, 2 * self.linear_key_dim + 2 * self.linear_value_dim,
                                   "attention", gdn),
                       LinearShape("in_proj_ba", h, 2 * self.linear_num_value_heads, "attention", gdn),
                       LinearShape("out_proj", self.linear_value_dim, h, "attention", gdn)]
        dense = self.num_dense_mlp_layers
        if dense:
            I = self.intermediate_size
            if self.fused_gate_up:
                shapes += [LinearShape("gate_up_proj", h, 2 * I, "mlp", dense),
                           LinearShape("down_proj", I, h, "mlp", dense)]
            else:
                shapes += [LinearShape("gate_proj", h, I, "mlp", dense),
                           LinearShape("up_proj", h, I, "mlp", dense),
                           LinearShape("down_proj", I, h, "mlp", dense)]
        moe = len(self.moe_layers)
        if moe:
            E, Im = self.num_experts, self.moe_intermediate_size
            eb = self.expert_bias
            shapes += [LinearShape("router", h, E, "router", moe, bias=self.router_bias),
                       LinearShape("experts.gate_proj", h, Im, "experts", moe, count=E, bias=eb),
                       LinearShape("experts.up_proj", h, Im, "experts", moe, count=E, bias=eb),
                       LinearShape("experts.down_proj", Im, h, "experts", moe, count=E, bias=eb)]
            Is = self.shared_expert_intermediate_size
            if Is:
                shapes += [LinearShape("shared_expert.gate_proj", h, Is, "mlp", moe),
                           LinearShape("shared_expert.up_proj", h, Is, "mlp", moe),
                           LinearShape("shared_expert.down_proj", Is, h, "mlp", moe)]
                if self.model_type in ("qwen2_moe", "qwen3_next"):
                    shapes.append(LinearShape("shared_expert_gate", h, 1, "router", moe))
        return tuple(shapes)

    def param_counts(self) -> ParamCounts:
        """Exact parameter counts by kind, as transformers builds the model."""
        h, L, V = self.hidden_size, self.num_layers, self.vocab_size
        by_group = {"attention": 0, "mlp": 0, "experts": 0, "router": 0}
        for s in self.linear_shapes():
            by_group[s.group] += s.weight_params + s.bias_params
        norms = L * self.norms_per_layer * h + h  # per-layer norms + final norm
        if self.qk_norm:
            norms += self.num_attention_layers * 2 * self.head_dim
        if self.is_mla:
            norms += L * self.kv_lora_rank + (L * self.q_lora_rank if self.q_lora_rank else 0)
        gdn = self.num_linear_attention_layers
        if gdn:
            # per GDN layer: conv1d weight (conv_dim x kernel, no bias), dt_bias and A_log (one per
            # value head), and the gated RMSNorm over one value head
            norms += gdn * self.linear_value_head_dim
            by_group["attention"] += gdn * (self.linear_conv_dim * self.linear_conv_kernel_dim
                                            + 2 * self.linear_num_value_heads)
        if self.attention_sinks:
            by_group["attention"] += self.num_attention_layers * self.num_attention_heads
        embeddings = V * h
        lm_head = 0 if self.tie_word_embeddings else V * h
        return ParamCounts(embeddings=embeddings, attention=by_group["attention"], mlp=by_group["mlp"],
                           experts=by_group["experts"], router=by_group["router"], norms=norms,
                           lm_head=lm_head, vision=self.vision_params)

    @property
    def n_params(self) -> int:
        return self.param_counts().total

    def summary(self) -> dict:
        return {"id": self.model_id, "model_type": self.model_type, "params": self.n_params,
                "layers": self.num_layers, "hidden_size": self.hidden_size,
                "vocab_size": self.vocab_size, "source": self.source}


def unmodelled_architecture(spec: ModelSpec) -> str | None:
    """Why ``spec``'s numbers are a guess: its ``model_type`` has no entry in the architecture
    facts (it is planned as a Llama-like decoder); None when the family is modelled."""
    if spec.model_type in _ARCH_FACTS:
        return None
    near = difflib.get_close_matches(spec.model_type, sorted(_ARCH_FACTS), n=1, cutoff=0.0)
    return (f"model_type '{spec.model_type}' of {spec.model_id} is not modelled: it is planned as a Llama-like "
            f"decoder (2 norms per layer, no q/k/v bias), which its code may not be; the nearest modelled "
            f"family is '{near[0] if near else 'llama'}'")


# -- parsing config.json ---------------------------------------------------------------------

def _siglip_params(vc: dict, text_hidden: int) -> int:
    """Parameters of a SigLIP vision tower plus Gemma 3's multimodal projector.

    Patch embedding conv (with bias), learned position embeddings, ``L`` encoder layers
    (q/k/v/o with bias, fc1/fc2 with bias, two LayerNorms with bias), post LayerNorm, then
    the projector (``mm_input_projection_weight`` vision_hidden x text_hidden, and an RMSNorm).
    """
    d = int(vc.get("hidden_size", 1152))
    ff = int(vc.get("intermediate_size", 4304))
    n = int(vc.get("num_hidden_layers", 27))
    patch = int(vc.get("patch_size", 14))
    image = int(vc.get("image_size", 896))
    ch = int(vc.get("num_channels", 3))
    patches = (image // patch) ** 2
    embed = ch * patch * patch * d + d + patches * d
    layer = 4 * (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * 2 * d
    post = 2 * d
    projector = d * text_hidden + d
    return embed + n * layer + post + projector


def _qwen2_5_vl_vision_params(vc: dict) -> int:
    """Parameters of Qwen2.5-VL's vision tower and patch merger (transformers
    models/qwen2_5_vl/modeling_qwen2_5_vl.py: ``Qwen2_5_VisionPatchEmbed`` is a bias-free Conv3d over
    ``temporal_patch_size x patch_size^2`` pixels; each block has two RMSNorms, ``qkv`` and ``proj``
    with bias and a gated MLP with bias; the merger is an RMSNorm and two biased linears over
    ``spatial_merge_size^2`` concatenated patches)."""
    d = int(vc.get("hidden_size", 1280))
    ff = int(vc.get("intermediate_size", 3420))
    depth = int(vc.get("depth", 32))
    patch = int(vc.get("patch_size", 14))
    temporal = int(vc.get("temporal_patch_size", 2))
    ch = int(vc.get("in_chans", vc.get("in_channels", 3)))
    out = int(vc.get("out_hidden_size", 3584))
    merge = int(vc.get("spatial_merge_size", 2)) ** 2 * d
    embed = ch * temporal * patch * patch * d
    block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * (d * ff + ff) + (ff * d + d)
    merger = d + (merge * merge + merge) + (merge * out + out)
    return embed + depth * block + merger


def _vision_params(cfg: dict, text_hidden: int) -> int:
    """Parameters of a multimodal checkpoint's vision tower (both the trainer and vLLM load it)."""
    vc = cfg.get("vision_config")
    if not isinstance(vc, dict):
        return 0
    kind = str(vc.get("model_type") or cfg.get("model_type") or "")
    if kind.startswith("qwen2_5_vl"):
        return _qwen2_5_vl_vision_params(vc)
    return _siglip_params(vc, text_hidden)


def _layer_types(cfg: dict, n_layers: int, model_type: str) -> tuple:
    """Per-layer attention kind from ``layer_types`` or the architecture's fixed pattern:
    "full_attention", "sliding_attention" or "linear_attention" (gated delta-net)."""
    lt = cfg.get("layer_types")
    if lt:
        if len(lt) != n_layers:
            raise ConfigError(f"config.json: layer_types has {len(lt)} entries for {n_layers} layers")
        return tuple("linear_attention" if "linear" in str(t)
                     else "sliding_attention" if "sliding" in str(t) or "local" in str(t) else "full_attention"
                     for t in lt)
    if model_type == "qwen3_next":
        # Qwen3NextConfig: every full_attention_interval-th layer is full attention, the rest linear
        interval = int(cfg.get("full_attention_interval", 4))
        return tuple("full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n_layers))
    if model_type == "gpt_oss" and cfg.get("sliding_window"):
        # GptOssConfig default: even layers slide, odd layers attend fully
        return tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers))
    window = cfg.get("sliding_window")
    if model_type == "gemma2" and window:
        # Gemma 2 alternates local (even layers) and global attention.
        return tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers))
    if model_type in ("gemma3", "gemma3_text") and window:
        pattern = int(cfg.get("sliding_window_pattern", 6))
        return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers))
    if window and cfg.get("use_sliding_window", model_type in ("mistral",)):
        # Mistral v0.1 style: every layer slides. (Qwen2/3 set use_sliding_window=false.)
        return tuple("sliding_attention" for _ in range(n_layers))
    return tuple("full_attention" for _ in range(n_layers))


def _int(cfg: dict, key: str, where: str, default=None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: missing required field '{key}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value <= 0:
        raise ConfigError(f"{where}: field '{key}' must be a positive integer, got {value!r}")
    return int(value)


def spec_from_config(cfg: dict, model_id: str, source: str = "", where: str | None = None) -> ModelSpec:
    """Build a :class:`ModelSpec` from a config.json dict (multimodal configs: the text part).
    Every value read is checked first (planner.specs.config_contract); ``where`` names the file in
    messages (default: ``config.json of <model_id>``)."""
    where = where or f"config.json of {model_id}"
    check_config(cfg, where)
    text = _text_part(cfg)
    # a vision tower next to text_config (Gemma 3) or next to top-level text fields (Qwen2.5-VL)
    vision = _vision_params(cfg, int(text.get("hidden_size", 0) or 0))
    model_type = str(text.get("model_type") or cfg.get("model_type") or "")
    if not model_type:
        raise ConfigError(f"{where}: missing required field 'model_type'")
    sizes = _size_fields(text, where)
    moe = _moe_fields(text, model_type, sizes["num_layers"], sizes["intermediate_size"])
    mla = _mla_fields(text)
    dtype = str(text.get("torch_dtype") or text.get("dtype") or cfg.get("torch_dtype") or "bfloat16")
    quantization = _quantization_fields(cfg)
    architecture = _architecture_fields(text, model_type)
    attention = _attention_pattern_fields(text, sizes["num_layers"], model_type)
    return ModelSpec(
        model_id=model_id,
        model_type=model_type,
        **sizes,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
        dtype=dtype.replace("torch.", ""),
        **architecture,
        **attention,
        **moe,
        **mla,
        **_linear_attention_fields(text),
        **quantization,
        vision_params=vision,
        source=source,
        raw_config=cfg,
    )


def _text_part(cfg: dict) -> dict:
    """The text decoder's config: ``text_config`` (taking the top level's tying and dtype when it has
    none) in a multimodal config, else the config itself."""
    if not isinstance(cfg.get("text_config"), dict):
        return cfg
    text = dict(cfg["text_config"])
    text.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", True))
    text.setdefault("torch_dtype", cfg.get("torch_dtype") or cfg.get("dtype"))
    return text


def _size_fields(text: dict, where: str) -> dict:
    """The decoder's sizes (vocabulary, widths, layers, heads, positions) as ModelSpec fields, each
    required size checked; query heads must be a multiple of key/value heads."""
    h = _int(text, "hidden_size", where)
    n_layers = _int(text, "num_hidden_layers", where)
    n_heads = _int(text, "num_attention_heads", where)
    n_kv = _int(text, "num_key_value_heads", where, default=n_heads)
    head_dim = text.get("head_dim") or h // n_heads
    head_dim = _int({"head_dim": head_dim}, "head_dim", where)
    vocab = _int(text, "vocab_size", where)
    inter = _int(text, "intermediate_size", where,
                 default=text.get("moe_intermediate_size"))  # pure-MoE configs may omit it
    max_pos = _int(text, "max_position_embeddings", where, default=4096)
    if n_heads % n_kv:
        raise ConfigError(f"{where}: num_attention_heads ({n_heads}) is not a multiple of "
                          f"num_key_value_heads ({n_kv})")
    if int(text.get("kv_lora_rank") or 0):
        # MLA: every query head gets its own expanded key/value (the config's num_key_value_heads,
        # = num_attention_heads); head_dim is the query/key head width qk_nope + qk_rope. The cached
        # latent (kv_lora_rank + qk_rope_head_dim) is ModelSpec.mla_latent_dim, never head_dim.
        head_dim = int(text.get("qk_nope_head_dim") or 0) + int(text.get("qk_rope_head_dim") or 0)
    return dict(vocab_size=vocab, hidden_size=h, intermediate_size=inter, num_layers=n_layers,
                num_attention_heads=n_heads, num_kv_heads=n_kv, head_dim=head_dim,
                max_position_embeddings=max_pos)


def _moe_fields(text: dict, model_type: str, n_layers: int, intermediate_size: int) -> dict:
    """The mixture of experts as ModelSpec fields: experts, their widths and which layers route
    (DeepSeek: after ``first_k_dense_replace``, every ``moe_layer_freq``-th; Qwen: every
    ``decoder_sparse_step``-th but ``mlp_only_layers``); a dense model's are 0 and ()."""
    n_experts = int(text.get("num_experts") or text.get("n_routed_experts") or text.get("num_local_experts") or 0)
    moe_layers: tuple = ()
    moe_inter = 0
    shared_inter = 0
    if n_experts:
        moe_inter = int(text.get("moe_intermediate_size") or intermediate_size)
        if model_type.startswith("deepseek"):
            first_dense = int(text.get("first_k_dense_replace", 0))
            freq = int(text.get("moe_layer_freq", 1))
            moe_layers = tuple(i for i in range(n_layers) if i >= first_dense and i % freq == 0)
            shared_inter = moe_inter * int(text.get("n_shared_experts") or 0)
        else:
            step = int(text.get("decoder_sparse_step", 1) or 1)
            only_mlp = set(text.get("mlp_only_layers") or ())
            moe_layers = tuple(i for i in range(n_layers) if i not in only_mlp and (i + 1) % step == 0)
            shared_inter = int(text.get("shared_expert_intermediate_size") or 0)
    return dict(num_experts=n_experts, num_experts_per_tok=int(text.get("num_experts_per_tok") or 0),
                moe_intermediate_size=moe_inter, shared_expert_intermediate_size=shared_inter,
                moe_layers=moe_layers)


def _mla_fields(text: dict) -> dict:
    """Multi-head latent attention's ranks and head widths as ModelSpec fields (0 without MLA)."""
    return dict(kv_lora_rank=int(text.get("kv_lora_rank") or 0),
                q_lora_rank=int(text.get("q_lora_rank") or 0),
                qk_rope_head_dim=int(text.get("qk_rope_head_dim") or 0),
                qk_nope_head_dim=int(text.get("qk_nope_head_dim") or 0),
                v_head_dim=int(text.get("v_head_dim") or 0))


def _quantization_fields(top: dict) -> dict:
    """The checkpoint's own quantisation method (lower case, None if unquantised) and, for MXFP4,
    the experts' (ModelSpec.quantization, expert_quantization)."""
    qcfg = top.get("quantization_config") or {}
    quant = None
    expert_quant = None
    if qcfg:
        quant = str(qcfg.get("quant_method") or "").lower() or None
    if quant == "mxfp4":
        # gpt-oss: only the expert weights are MXFP4 (modules_to_not_convert: attention, router,
        # embeddings, lm_head); everything else is bf16
        quant, expert_quant = None, "mxfp4"
    return dict(quantization=quant, expert_quantization=expert_quant)


def _architecture_fields(text: dict, model_type: str) -> dict:
    """What the architecture fixes (``_ARCH_FACTS``: norms, biases, fused projections, sinks, gates)
    as ModelSpec fields; the config's ``attention_bias`` decides the q/k/v and o biases."""
    facts = dict(_ARCH_FACTS.get(model_type, dict(norms_per_layer=2)))
    if "attention_bias" in text:
        facts["qkv_bias"] = bool(text["attention_bias"])
    return dict(norms_per_layer=facts.get("norms_per_layer", 2),
                qkv_bias=bool(facts.get("qkv_bias", False)),
                qk_norm=bool(facts.get("qk_norm", False)),
                fused_qkv=bool(facts.get("fused_qkv", False)),
                fused_gate_up=bool(facts.get("fused_gate_up", False)),
                o_bias=bool(facts.get("o_bias", False)) and bool(text.get("attention_bias", False)),
                attention_sinks=bool(facts.get("attention_sinks", False)),
                router_bias=bool(facts.get("router_bias", False)),
                expert_bias=bool(facts.get("expert_bias", False)),
                attn_output_gate=bool(facts.get("attn_output_gate", False)))


def _attention_pattern_fields(text: dict, n_layers: int, model_type: str) -> dict:
    """Which layers attend fully, in a sliding window or linearly, the window and the logit soft-cap,
    as ModelSpec fields."""
    return dict(layer_types=_layer_types(text, n_layers, model_type),
                sliding_window=int(text["sliding_window"]) if text.get("sliding_window") else None,
                final_logit_softcapping=text.get("final_logit_softcapping"))


def _linear_attention_fields(text: dict) -> dict:
    """Gated delta-net (linear attention) head counts and widths as ModelSpec fields (0 without)."""
    return dict(linear_num_key_heads=int(text.get("linear_num_key_heads") or 0),
                linear_num_value_heads=int(text.get("linear_num_value_heads") or 0),
                linear_key_head_dim=int(text.get("linear_key_head_dim") or 0),
                linear_value_head_dim=int(text.get("linear_value_head_dim") or 0),
                linear_conv_kernel_dim=int(text.get("linear_conv_kernel_dim") or 0))


# -- resolution ------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _shipped_index() -> dict:
    """Lower-cased id and alias -> profile path for every shipped model profile."""
    index: dict = {}
    for path in json_files(require(MODELS_DIR)):
        with path.open() as f:
            prof = json.load(f)
        index[prof["id"].lower()] = path
        for alias in prof.get("aliases", ()):
            index[alias.lower()] = path
    return index


def shipped_model_ids() -> list[str]:
    """The Hugging Face ids of every shipped model profile."""
    ids = set()
    for path in _shipped_index().values():
        with path.open() as f:
            ids.add(json.load(f)["id"])
    return sorted(ids)


@lru_cache(maxsize=64)
def _load_shipped(path) -> ModelSpec:
    with path.open() as f:
        prof = json.load(f)
    return spec_from_config(prof["config"], prof["id"], source=f"shipped profile {path.name}")


def _read_config_file(path: Path, model: str) -> dict:
    return read_config_json(path)  # strict JSON, UTF-8; ConfigError naming the file


def _local_config(key: str) -> tuple[Path | None, Path | None]:
    """(the path ``key`` names, its config.json when there is one). A name the file system cannot
    take (too long, ``~nosuchuser``) is no local path: (None, None)."""
    try:
        local = Path(key).expanduser()
        if local.is_dir() and (local / "config.json").is_file():
            return local, local / "config.json"
        return local, (local if local.is_file() else None)
    except (OSError, RuntimeError, ValueError):  # ENAMETOOLONG, unknown user, embedded NUL
        return None, None


# Words by which a model name says it is instruction-tuned or a base (pretrained) checkpoint.
_TUNED_WORDS = frozenset({"instruct", "it", "chat"})
_BASE_WORDS = frozenset({"base", "pt"})


def _name_words(name: str) -> list[str]:
    """Lower-case words of a model name without its organisation (``Qwen/Qwen2.5-3B`` -> qwen2, 5, 3b)."""
    return [w for w in re.split(r"[^a-z0-9]+", name.strip().lower().rsplit("/", 1)[-1]) if w]


def _is_tuned(name: str) -> bool:
    return bool(set(_name_words(name)) & _TUNED_WORDS)


def _is_base(name: str) -> bool:
    return bool(set(_name_words(name)) & _BASE_WORDS)


def _family_key(name: str) -> str:
    """A name with its tuned/base words and separators dropped: Qwen2.5-3B, qwen2.5-3b-instruct and
    Qwen/Qwen2.5-3B-Instruct share ``qwen253b``; Mistral-Small-24B-Base-2501 and its Instruct too."""
    return "".join(w for w in _name_words(name) if w not in _TUNED_WORDS | _BASE_WORDS)


def _swaps_checkpoint(name: str, profile_id: str) -> bool:
    """Whether resolving ``name`` to ``profile_id`` would plan another checkpoint than the one named:
    a name without an instruct word for an Instruct profile, or a base name for a tuned one."""
    return (_is_tuned(profile_id) and not _is_tuned(name)) or (_is_base(name) and not _is_base(profile_id))


def _relatives(name: str) -> list[str]:
    """Shipped ids of the same family as ``name`` (the Instruct model of a base name, say)."""
    key = _family_key(name)
    return sorted({_load_shipped(h).model_id for h in _shipped_index().values()
                   if _family_key(_load_shipped(h).model_id) == key})


def _hub_offline_reason() -> str | None:
    """Why the Hub cannot be asked: offline mode set, or huggingface.co unreachable; None if it can."""
    import os

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"this machine is offline ({var}={os.environ[var]})"
    if not _hub_reachable():
        return "the Hub (huggingface.co) is unreachable from this machine"
    return None


_PASS_CONFIG = ("pass its config.json (downloaded where the Hub is reachable) or the model's local directory "
                "to --model")


def _not_this_checkpoint(name: str, relatives: list[str], why: str) -> UnknownModelError:
    """``name`` names a base model we do not ship: say so and name the shipped relatives, never swap one in."""
    shown = " or ".join(relatives)
    use = f"--model {relatives[0]}" if len(relatives) == 1 else "--model with one of them"
    return UnknownModelError(
        f"'{name}' names a base model that is not shipped{why}; the planner does not plan it as {shown}, "
        f"another checkpoint: pass {use} to plan for that one, or for the base model {_PASS_CONFIG}")


def _close_model_ids(name: str) -> list[str]:
    """Shipped ids spelled like ``name`` (typos), compared with and without the organisation."""
    spellings: dict[str, str] = {}
    for model_id in shipped_model_ids():
        spellings.setdefault(model_id.lower(), model_id)
        spellings.setdefault(model_id.lower().rsplit("/", 1)[-1], model_id)
    close = difflib.get_close_matches(name.lower(), list(spellings), n=6, cutoff=0.5)
    return list(dict.fromkeys(spellings[c] for c in close))[:3]


def resolve_model(model: str | ModelSpec) -> ModelSpec:
    """Resolve a model name, alias, local path or Hub id to a :class:`ModelSpec`.

    A name is never resolved to another checkpoint than the one it names: ``qwen2.5-3b`` (the base
    model) is not planned as Qwen2.5-3B-Instruct. Base models are planned from their config.json.
    """
    if isinstance(model, ModelSpec):
        return model
    if not isinstance(model, str) or not model.strip():
        raise UnknownModelError("no model given: pass --model with a Hugging Face id, alias or config.json path")
    key = model.strip()
    path = _shipped_index().get(key.lower())
    if path is not None:
        spec = _load_shipped(path)
        if _swaps_checkpoint(key, spec.model_id):
            raise _not_this_checkpoint(key, [spec.model_id], "")
        return spec
    local, config = _local_config(key)
    if config is not None:
        return spec_from_config(_read_config_file(config, key), key, source=f"local {local}", where=str(config))
    if (local is not None and local.suffix == ".json") or key.startswith(("/", "./", "../", "~")):
        raise UnknownModelError(f"no such file: {key}")
    offline = None
    if len(key) > 1024 or "\0" in key:
        raise UnknownModelError(f"unknown model: {len(key)} characters is not a model id, alias or path")
    if "/" in key:
        offline = _hub_offline_reason()
        cfg = _autoconfig_dict(key, ask_hub=offline is None)
        if cfg is not None:
            return spec_from_config(cfg, key, source="transformers AutoConfig (Hub or HF cache)")
    relatives = [r for r in _relatives(key) if _swaps_checkpoint(key, r)]
    if "/" not in key:
        why = ""
    elif offline:
        why = f" and not in the HF cache, and the Hub cannot be asked: {offline}"
    else:
        why = ", and neither the Hub nor the HF cache serves it"
    if relatives:
        raise _not_this_checkpoint(key, relatives, why)
    close = _close_model_ids(key)
    hint = f"did you mean {', '.join(close)}? " if close else "`plan models` lists the shipped models; "
    if "/" not in key:
        raise UnknownModelError(f"unknown model '{key}': not a shipped profile, a local config.json, or a Hub id "
                                f"(org/name); {hint}otherwise {_PASS_CONFIG}")
    served = (f"not in the HF cache, and the Hub cannot be asked: {offline}" if offline
              else "and neither the Hub nor the HF cache serves it (missing, gated or private)")
    raise UnknownModelError(f"unknown model '{key}': not a shipped profile or a local path, {served}; "
                            f"{hint}otherwise {_PASS_CONFIG}")


def _autoconfig_dict(model_id: str, ask_hub: bool = True) -> dict | None:
    """config.json through transformers' AutoConfig from the local HF cache, then (``ask_hub``) the
    Hub; None when neither serves it."""
    if "/" not in model_id:
        return None
    try:
        from transformers import AutoConfig  # lazy: only for ids we do not ship
    except ImportError:
        return None
    for local_only in (True, False) if ask_hub else (True,):
        try:
            return AutoConfig.from_pretrained(model_id, local_files_only=local_only).to_dict()
        except Exception:  # noqa: BLE001 - offline, gated, missing: all mean "cannot serve it"
            continue
    return None


def _hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the Hub answers at all (avoids huggingface_hub's retry loop when offline)."""
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False
