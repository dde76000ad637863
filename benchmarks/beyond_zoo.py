"""Models beyond image classification, tiny and randomly initialised (nothing is downloaded).

The third zoo of ``benchmarks/coverage.py`` and the models of ``tests/test_side_effects.py``:
torchvision segmentation, detection (FPN backbones, whole detectors pruned through
``submodules=``), video and optical flow; Hugging Face BERT, GPT-2, ViT, Llama (grouped-query
attention) and wav2vec2; a diffusers UNet; a UNet with transposed convolutions and a YOLO-style
detector written here. Each :class:`Case` builds its model and makes inputs at any batch size,
and at a second sequence length or image size where the model accepts one, so that exports can
be checked on inputs they were not traced with. Configurations are as small as the architecture
allows: the zoo tests the op patterns, not the sizes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

SEED = 0


class Example(NamedTuple):
    """Inputs as in ``model(*args, **kwargs)``."""

    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, object]


@dataclass(frozen=True)
class Case:
    """One model of the zoo.

    ``build()`` returns the model in eval mode (seeded, so two builds are equal);
    ``inputs(batch, other_size)`` returns positional example inputs, at the traced size or, with
    ``other_size``, at a second sequence length or image size; ``keywords`` (same arguments), if
    given, the keyword inputs (``attention_mask=``, ``use_cache=False``). ``size`` says how the
    model takes that second size: ``"dynamic"`` along the dims ``dynamic`` names per forward
    argument, which an export must trace as dynamic; ``"any"`` by resizing its input itself (a
    detector's transform), so any export takes it; ``"one"``: the model has one size.
    ``submodules``: the parts to prune when torch.export cannot capture the whole model.
    ``needs``: packages it imports. ``slow``: too slow for the default test run.
    ``ill_conditioned``: why the model's outputs change under any rounding of its parts' (so an
    export cannot match it end to end and says so), or empty.
    """

    name: str
    family: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int, bool], tuple[torch.Tensor, ...]]
    needs: tuple[str, ...] = ("torchvision",)
    submodules: tuple[str, ...] | None = None
    dynamic: dict[str, tuple[int, ...]] = field(default_factory=dict)
    size: str = "dynamic"
    slow: bool = False
    ill_conditioned: str = ""
    keywords: Callable[[int, bool], dict[str, object]] | None = None

    def example(self, batch: int, other_size: bool = False) -> Example:
        """Positional and keyword inputs at ``batch`` (and the other size)."""
        kwargs = self.keywords(batch, other_size) if self.keywords else {}
        return Example(self.inputs(batch, other_size), kwargs)

    def available(self) -> bool:
        """Whether every package the case imports is installed."""
        return all(importlib.util.find_spec(p) is not None for p in self.needs)


def seeded(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """``build`` under a fixed seed, in eval mode, with degenerate initial values re-drawn."""

    def make() -> nn.Module:
        torch.manual_seed(SEED)
        return redraw_constants(build().eval())

    return make


def redraw_constants(model: nn.Module) -> nn.Module:
    """Re-draw parameters and BatchNorm statistics a zoo initialises to one constant (zero
    biases, unit norms, zero-initialised last layers): at such values whole branches are dead
    or invisible, trivially removed, and an exactness check would not see them."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not t.is_floating_point() or t.numel() < 2:
                continue
            if bool((t == t.reshape(-1)[0]).all()):
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1 + t)
    return model


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for torchvision's FrozenBatchNorm2d with the same statistics, as
    a detector built on a pretrained backbone has (the random-init builders use BatchNorm2d)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key).detach())
                setattr(parent, child_name, frozen)
    return model


def images(c: int, size: int, other: int) -> Callable[[int, bool], tuple[torch.Tensor, ...]]:
    """Random images of ``c`` channels, ``size`` (or ``other``) pixels square."""

    def make(batch: int, other_size: bool = False) -> tuple[torch.Tensor, ...]:
        s = other if other_size else size
        return (torch.randn(batch, c, s, s),)

    return make


SPATIAL = {"x": (2, 3)}


# torchvision -----------------------------------------------------------------------------------
def _tv(name: str, **kwargs) -> Callable[[], nn.Module]:
    """A torchvision model by name, random init (segmentation and detection models take
    ``weights_backbone`` too: None, so nothing is downloaded)."""

    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, **kwargs)

    return build


def _segmentation(name: str, **kwargs) -> Case:
    return Case(
        name,
        "segmentation",
        seeded(_tv(name, num_classes=5, weights_backbone=None, **kwargs)),
        images(3, 64, 96),
        dynamic={"input" if name.startswith("lraspp") else "x": (2, 3)},  # LRASPP's argument
        slow=True,  # mobilenet_v3_large and resnet50 graphs: long captures
    )


def _fpn_backbone() -> nn.Module:
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    return resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=5
    )


def _mobilenet_fpn_backbone() -> nn.Module:
    from torchvision.models.detection.backbone_utils import mobilenet_backbone

    return freeze_batchnorm(
        mobilenet_backbone(
            backbone_name="mobilenet_v3_small", weights=None, fpn=True, trainable_layers=6
        )
    )


def _detector(name: str, **kwargs) -> Callable[[], nn.Module]:
    """A whole torchvision detector (at 128 px: ``min_size`` and ``max_size``; SSDlite fixes its
    own 320), its backbone frozen as when pretrained."""

    def build() -> nn.Module:
        model = _tv(name, weights_backbone=None, num_classes=5, **kwargs)()
        freeze_batchnorm(model.backbone)
        return model

    return build


def _clips(frames: int, size: int) -> Callable[[int, bool], tuple[torch.Tensor, ...]]:
    """Random RGB clips, ``frames`` x ``size`` x ``size`` (more of each at the other size)."""

    def make(batch: int, other_size: bool = False) -> tuple[torch.Tensor, ...]:
        f, s = (frames + frames // 2, size + size // 4) if other_size else (frames, size)
        return (torch.randn(batch, 3, f, s, s),)

    return make


CLIP = {"x": (2, 3, 4)}


def _raft() -> nn.Module:
    import torchvision

    return torchvision.models.optical_flow.raft_small(weights=None)


def _image_pair(batch: int, other_size: bool = False) -> tuple[torch.Tensor, ...]:
    s = 160 if other_size else 128  # RAFT's correlation pyramid needs 128 px
    return (torch.randn(batch, 3, s, s), torch.randn(batch, 3, s, s))


# Hugging Face ----------------------------------------------------------------------------------
TOKENS, OTHER_TOKENS, VOCAB = 16, 24, 96
TEXT = {"input_ids": (1,)}


def _token_ids(batch: int, other_size: bool = False) -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, VOCAB, (batch, OTHER_TOKENS if other_size else TOKENS)),)


def _padding_mask(batch: int, other_size: bool = False) -> dict[str, object]:
    """``attention_mask=``: the first sequence padded at its end, as in a batch of unequal texts."""
    mask = torch.ones(batch, OTHER_TOKENS if other_size else TOKENS, dtype=torch.long)
    mask[0, -3:] = 0
    return {"attention_mask": mask}


def _no_cache(batch: int, other_size: bool = False) -> dict[str, object]:
    """A decoder's keywords: padding, and ``use_cache=False`` (a cache is not a tensor)."""
    return {**_padding_mask(batch, other_size), "use_cache": False}


def _small(**over) -> dict:
    """A 2-layer, 64-wide, 4-head transformer: every pattern of the full model at tiny cost."""
    return {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        **over,
    }


def _bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=VOCAB, max_position_embeddings=64, **_small()))


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    config.use_cache = False
    return GPT2LMHeadModel(config)


def _vit() -> nn.Module:
    from transformers import ViTConfig, ViTModel

    return ViTModel(ViTConfig(image_size=32, patch_size=8, **_small()))


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, max_position_embeddings=64, num_key_value_heads=2, **_small()
    )
    return LlamaForCausalLM(config)


def _wav2vec2() -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    return Wav2Vec2Model(
        Wav2Vec2Config(
            conv_dim=(32, 32, 32),
            conv_kernel=(10, 3, 3),
            conv_stride=(5, 2, 2),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            **_small(),
        )
    )


def _audio(batch: int, other_size: bool = False) -> tuple[torch.Tensor, ...]:
    return (torch.randn(batch, 1200 if other_size else 800),)


def _diffusers_unet() -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )


def _noisy_sample(batch: int, other_size: bool = False) -> tuple[torch.Tensor, ...]:
    s = 24 if other_size else 16
    return (torch.randn(batch, 3, s, s), torch.randint(0, 1000, (batch,)).float())


# written here ----------------------------------------------------------------------------------
def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU()
    )


class TinyUNet(nn.Module):
    """An encoder-decoder whose decoder upsamples with ConvTranspose2d and concatenates the skip
    connections, as segmentation and diffusion UNets do."""

    def __init__(self, c: int = 16, classes: int = 4):
        super().__init__()
        self.down1, self.down2 = _conv_bn(3, c), _conv_bn(c, 2 * c, 2)
        self.bottom = _conv_bn(2 * c, 4 * c, 2)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = _conv_bn(4 * c, 2 * c)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec1 = _conv_bn(2 * c, c)
        self.head = nn.Conv2d(c, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.down1(x)
        s2 = self.down2(s1)
        y = self.dec2(torch.cat([self.up2(self.bottom(s2)), s2], 1))
        return self.head(self.dec1(torch.cat([self.up1(y), s1], 1)))


class CSPBlock(nn.Module):
    """Cross-stage partial block: half the channels through a residual conv pair, concatenated
    back with the other half and mixed by a 1x1 conv (YOLOv5's C3)."""

    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c, c // 2, 1)
        self.res = nn.Sequential(_conv_bn(c // 2, c // 2), _conv_bn(c // 2, c // 2))
        self.mix = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return self.mix(torch.cat([a + self.res(a), self.b(x)], 1))


class DetectHead(nn.Module):
    """YOLO's decoding head: per level a 1x1 conv to anchors x (box, objectness, classes), then
    sigmoid boxes offset by a grid cell it caches between calls (rebuilt when the size
    changes), as YOLOv5's Detect layer does."""

    def __init__(self, channels: tuple[int, ...], classes: int = 3, anchors: int = 2):
        super().__init__()
        self.anchors, self.outputs = anchors, 5 + classes
        self.convs = nn.ModuleList(nn.Conv2d(c, anchors * self.outputs, 1) for c in channels)
        self.grids: list[torch.Tensor | None] = [None] * len(channels)

    def _grid(self, i: int, h: int, w: int) -> torch.Tensor:
        grid = self.grids[i]
        if grid is None or grid.shape[2:4] != (h, w):
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            grid = torch.stack([xs, ys], -1).float().view(1, 1, h, w, 2)
            self.grids[i] = grid
        return grid

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i, (conv, f) in enumerate(zip(self.convs, feats, strict=True)):
            b, _, h, w = f.shape
            p = conv(f).view(b, self.anchors, self.outputs, h, w).permute(0, 1, 3, 4, 2)
            p = p.sigmoid()
            xy = (p[..., :2] * 2 - 0.5 + self._grid(i, h, w)) * (2 ** (i + 3))
            out.append(torch.cat([xy, p[..., 2:]], -1).reshape(b, -1, self.outputs))
        return torch.cat(out, 1)


class TinyYOLO(nn.Module):
    """A CSP backbone, an FPN neck (nearest upsampling, concatenation) and a decoding head."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.stem = _conv_bn(3, c, 2)
        self.s1 = nn.Sequential(_conv_bn(c, 2 * c, 2), CSPBlock(2 * c))
        self.s2 = nn.Sequential(_conv_bn(2 * c, 4 * c, 2), CSPBlock(4 * c))
        self.s3 = nn.Sequential(_conv_bn(4 * c, 8 * c, 2), CSPBlock(8 * c))
        self.lateral = nn.Conv2d(8 * c, 4 * c, 1)
        self.fuse = CSPBlock(8 * c)
        self.head = DetectHead((8 * c, 8 * c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.s2(self.s1(self.stem(x)))
        p4 = self.s3(p3)
        up = nn.functional.interpolate(self.lateral(p4), scale_factor=2.0, mode="nearest")
        return self.head([self.fuse(torch.cat([up, p3], 1)), p4])


TIED_SCORES = (
    "its random-init scores tie across anchors, so a change in the last bits of the backbone's "
    "outputs reorders its top-k and non-maximum suppression: other detections"
)


# the zoo ---------------------------------------------------------------------------------------
def cases() -> list[Case]:
    """Every model of the zoo, in report order (installed or not: see :meth:`Case.available`)."""
    det = {"size": "any", "slow": True}  # the detector's transform resizes its input
    px128 = {"min_size": 128, "max_size": 128}
    rcnn = {**det, "submodules": ("backbone", "roi_heads.box_head")}
    hf = {"needs": ("transformers",), "dynamic": TEXT}
    padded = {**hf, "dynamic": {**TEXT, "attention_mask": (1,)}}
    return [
        _segmentation("fcn_resnet50"),
        _segmentation("deeplabv3_mobilenet_v3_large"),
        _segmentation("lraspp_mobilenet_v3_large"),
        Case("resnet18_fpn_frozenbn", "detection", seeded(_fpn_backbone), images(3, 64, 96),
             dynamic=SPATIAL, slow=True),
        Case("mobilenet_v3_small_fpn_frozenbn", "detection", seeded(_mobilenet_fpn_backbone),
             images(3, 64, 96), dynamic=SPATIAL, slow=True),
        Case("fasterrcnn_mobilenet_v3_large_fpn", "detection",
             seeded(_detector("fasterrcnn_mobilenet_v3_large_fpn", **px128)), images(3, 128, 160),
             **rcnn),
        Case("fasterrcnn_resnet50_fpn", "detection",
             seeded(_detector("fasterrcnn_resnet50_fpn", **px128)), images(3, 128, 160), **rcnn),
        Case("retinanet_resnet50_fpn", "detection",
             seeded(_detector("retinanet_resnet50_fpn", **px128)), images(3, 128, 160),
             submodules=("backbone",), **det),
        Case("ssdlite320_mobilenet_v3_large", "detection",
             seeded(_detector("ssdlite320_mobilenet_v3_large")), images(3, 128, 160),
             submodules=("backbone",), ill_conditioned=TIED_SCORES, **det),
        Case("tiny_yolo", "detection", seeded(TinyYOLO), images(3, 64, 96), dynamic=SPATIAL),
        Case("r3d_18", "video", seeded(_tv("r3d_18")), _clips(4, 32), dynamic=CLIP, slow=True),
        Case("mc3_18", "video", seeded(_tv("mc3_18")), _clips(4, 32), dynamic=CLIP, slow=True),
        Case("r2plus1d_18", "video", seeded(_tv("r2plus1d_18")), _clips(4, 32), dynamic=CLIP,
             slow=True),
        Case("s3d", "video", seeded(_tv("s3d")), _clips(16, 224), dynamic=CLIP, slow=True),
        Case("raft_small", "optical flow", seeded(_raft), _image_pair,
             dynamic={"image1": (2, 3), "image2": (2, 3)}, slow=True),
        Case("tiny_unet_convtranspose", "segmentation", seeded(TinyUNet), images(3, 32, 48),
             dynamic=SPATIAL),
        Case("bert", "transformers", seeded(_bert), _token_ids, keywords=_padding_mask, **padded),
        Case("gpt2", "transformers", seeded(_gpt2), _token_ids, **hf),
        Case("vit", "transformers", seeded(_vit), images(3, 32, 32), ("transformers",),
             size="one"),
        Case("llama_gqa", "transformers", seeded(_llama), _token_ids, keywords=_no_cache,
             **padded),
        Case("wav2vec2", "transformers", seeded(_wav2vec2), _audio, ("transformers",),
             dynamic={"input_values": (1,)}),
        Case("unet2d_diffusers", "diffusers", seeded(_diffusers_unet), _noisy_sample,
             ("diffusers",), dynamic={"sample": (2, 3)}),
    ]  # fmt: skip


def by_name() -> dict[str, Case]:
    return {c.name: c for c in cases()}
