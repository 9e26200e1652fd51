"""Convolutional networks, one definition each, with the learning rule injected.

Every builder returns a ``models.layers.Network`` whose convolutions and
linear layers all carry feedback weights ``B`` set by the same rule object
(``rule.init_feedback``), exactly as ``models.mlp.build_mlp`` does. Inputs are
images ``(N, C, H, W)``; outputs are logits ``(N, num_classes)``.

- ``build_resnet(depth=18 | 50)``: the ImageNet topology of He et al. (2016)
  as in torchvision (stride on the 3x3 conv of the bottleneck, "v1.5"):
  conv7x7/2 (64) + BN + ReLU + maxpool3x3/2, four stages of BasicBlocks
  ``[2, 2, 2, 2]`` (18) or Bottlenecks ``[3, 4, 6, 3]`` (50) with widths
  64, 128, 256, 512 (stride 2 from the second stage), global average pooling
  and a linear classifier: 11,689,512 (18) and 25,557,032 (50) parameters
  with 1000 classes. ``stem="cifar"`` replaces the stem with conv3x3/1 and no
  max pooling, for 32x32 images.
- ``build_resnet20``: the CIFAR ResNet of He et al. (2016, §4.2): conv3x3
  (16), three stages of three BasicBlocks (16, 32, 64 channels), global
  average pooling, linear; projection shortcuts (conv1x1 + BN) where the
  shape changes.
- ``build_convnet``: a small convnet for 28x28 images: conv3x3 (32) + ReLU +
  maxpool2, conv3x3 (64) + ReLU + maxpool2, flatten, linear (hidden) + ReLU,
  linear (the pooling runs before the ReLU: the same function, cheaper).

The residual blocks (``BasicBlock``, ``Bottleneck``), used only here, are
defined here too.

Convolutions followed by batch norm have no bias. The networks record the
spatial size of every convolution's input at construction, so the weight
mirror can run before the first training batch.
"""
from __future__ import annotations

from .conv import Conv2d
from .layers import BackwardContext, Linear, Module, Network, ReLU
from .norm import BatchNorm1d, BatchNorm2d
from .pool import Flatten, GlobalAvgPool, MaxPool2d

__all__ = ["BasicBlock", "Bottleneck", "RESNET_STAGES", "build_resnet", "build_resnet20", "build_convnet"]


# -- residual blocks -------------------------------------------------------
class _Residual(Module):
    """``y = ReLU(main(x) + shortcut(x))``; shortcut is identity or conv1x1+BN.

    Backward: ``∂L/∂x = main'ᵀ δ + shortcut'ᵀ δ`` with ``δ`` the error after
    the final ReLU, each path's convolutions using the rule's feedback kernels.
    """

    def __init__(self):
        self._needs_input_grad = True
        super().__init__()
        self.main: list[Module] = []
        self.shortcut: list[Module] = []
        self.out_relu = ReLU()

    @property
    def needs_input_grad(self) -> bool:
        return self._needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value: bool) -> None:
        # The first modules of both paths see the block's input.
        self._needs_input_grad = bool(value)
        for path in (getattr(self, "main", []), getattr(self, "shortcut", [])):
            if path:
                path[0].needs_input_grad = bool(value)

    def children(self) -> list[Module]:
        return [*self.main, *self.shortcut, self.out_relu]

    def forward(self, x, train: bool = True):
        h = x
        for m in self.main:
            h = m.forward(h, train)
        r = x
        for m in self.shortcut:
            r = m.forward(r, train)
        h += r
        return self.out_relu.forward(h, train)

    def backward(self, dy, ctx: BackwardContext):
        d = self.out_relu.backward(dy, ctx)
        # shortcut first, so that recorded errors follow reversed(weight_layers)
        ds = d
        for m in reversed(self.shortcut):
            ds = m.backward(ds, ctx)
        dm = d
        for m in reversed(self.main):
            dm = m.backward(dm, ctx)
        if not self._needs_input_grad:
            return None
        dm += ds
        return dm


def _projection(c_in, c_out, stride, xp, rng, input_hw, dtype):
    if stride == 1 and c_in == c_out:
        return []
    return [Conv2d(c_in, c_out, 1, xp, rng, stride=stride, bias=False, input_hw=input_hw, dtype=dtype),
            BatchNorm2d(c_out, xp, dtype=dtype)]


class BasicBlock(_Residual):
    """ResNet basic block (He et al. 2016): 3x3 conv, BN, ReLU, 3x3 conv, BN,
    plus the shortcut, then ReLU. ``stride`` is on the first conv; the
    shortcut is conv1x1(stride)+BN when the shape changes, else identity.
    """

    expansion = 1

    def __init__(self, c_in: int, planes: int, xp, rng, stride: int = 1, input_hw=None,
                 dtype=None, zero_init_residual: bool = False):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = Conv2d(c_in, planes, 3, xp, rng, stride=stride, padding=1, bias=False, input_hw=input_hw, dtype=dtype)
        hw2 = None if input_hw is None else self.conv1.output_hw(input_hw)
        self.bn1 = BatchNorm2d(planes, xp, dtype=dtype)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(planes, c_out, 3, xp, rng, stride=1, padding=1, bias=False, input_hw=hw2, dtype=dtype)
        self.bn2 = BatchNorm2d(c_out, xp, dtype=dtype)
        if zero_init_residual:
            self.bn2.params["gamma"][...] = 0
        self.main = [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2]
        self.shortcut = _projection(c_in, c_out, stride, xp, rng, input_hw, dtype)
        self.output_hw = hw2
        self.needs_input_grad = True


class Bottleneck(_Residual):
    """ResNet bottleneck block (torchvision's v1.5): conv1x1, BN, ReLU, conv3x3
    (stride), BN, ReLU, conv1x1 (×4 channels), BN, plus the shortcut, then
    ReLU. The shortcut is conv1x1(stride)+BN when the shape changes.
    """

    expansion = 4

    def __init__(self, c_in: int, planes: int, xp, rng, stride: int = 1, input_hw=None,
                 dtype=None, zero_init_residual: bool = False):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = Conv2d(c_in, planes, 1, xp, rng, bias=False, input_hw=input_hw, dtype=dtype)
        self.bn1 = BatchNorm2d(planes, xp, dtype=dtype)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, xp, rng, stride=stride, padding=1, bias=False,
                            input_hw=input_hw, dtype=dtype)
        hw2 = None if input_hw is None else self.conv2.output_hw(input_hw)
        self.bn2 = BatchNorm2d(planes, xp, dtype=dtype)
        self.relu2 = ReLU()
        self.conv3 = Conv2d(planes, c_out, 1, xp, rng, bias=False, input_hw=hw2, dtype=dtype)
        self.bn3 = BatchNorm2d(c_out, xp, dtype=dtype)
        if zero_init_residual:
            self.bn3.params["gamma"][...] = 0
        self.main = [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2, self.relu2, self.conv3, self.bn3]
        self.shortcut = _projection(c_in, c_out, stride, xp, rng, input_hw, dtype)
        self.output_hw = hw2
        self.needs_input_grad = True


# -- networks --------------------------------------------------------------

#: depth -> (block class, blocks per stage)
RESNET_STAGES = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _check_image_shape(input_shape, who: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"{who}: input_shape must be (C, H, W), got {tuple(input_shape)}")
    c, h, w = (int(v) for v in input_shape)
    if min(c, h, w) < 1:
        raise ValueError(f"{who}: input_shape must be positive, got {tuple(input_shape)}")
    return c, h, w


def _finish(modules, rule, xp, rng, input_shape) -> Network:
    net = Network(modules, rule, xp)
    net.init_feedback(rng)
    net.input_shape = tuple(int(v) for v in input_shape)
    return net


def _stages(block, counts, widths, c_in, hw, xp, rng, zero_init_residual, first_stride=1):
    modules = []
    for stage, (n_blocks, planes) in enumerate(zip(counts, widths)):
        for i in range(n_blocks):
            stride = (first_stride if stage == 0 else 2) if i == 0 else 1
            blk = block(c_in, planes, xp, rng, stride=stride, input_hw=hw,
                        zero_init_residual=zero_init_residual)
            modules.append(blk)
            c_in, hw = planes * block.expansion, blk.output_hw
    return modules, c_in, hw


def build_resnet(depth: int, input_shape, num_classes: int, rule, xp, rng,
                 stem: str = "imagenet", zero_init_residual: bool = False) -> Network:
    """ResNet-``depth`` (18, 34, 50, 101, 152) in the standard ImageNet topology.

    Parameters
    ----------
    depth : number of weight layers (selects BasicBlock or Bottleneck stages).
    input_shape : ``(C, H, W)`` of one image.
    num_classes : outputs of the final linear layer.
    rule : the learning rule (``circuits.rules``), shared by every layer.
    xp, rng : array module and its random generator.
    stem : ``"imagenet"`` (conv7x7/2, BN, ReLU, maxpool3x3/2) or ``"cifar"``
        (conv3x3/1, BN, ReLU) for small images.
    zero_init_residual : start each block's last BN with ``γ = 0``.
    """
    if depth not in RESNET_STAGES:
        raise ValueError(f"ResNet depth must be one of {', '.join(map(str, RESNET_STAGES))}, got {depth}")
    if stem not in ("imagenet", "cifar"):
        raise ValueError(f"ResNet stem must be 'imagenet' or 'cifar', got {stem!r}")
    c, h, w = _check_image_shape(input_shape, f"resnet{depth}")
    block, counts = RESNET_STAGES[depth]
    if stem == "imagenet":
        conv = Conv2d(c, 64, 7, xp, rng, stride=2, padding=3, bias=False, input_hw=(h, w))
        pool = MaxPool2d(3, 2, 1, xp=xp)
        hw = conv.output_hw((h, w))
        hw = tuple(((v + 2 - 3) // 2 + 1) for v in hw)
        modules = [conv, BatchNorm2d(64, xp), ReLU(), pool]
    else:
        conv = Conv2d(c, 64, 3, xp, rng, stride=1, padding=1, bias=False, input_hw=(h, w))
        hw = (h, w)
        modules = [conv, BatchNorm2d(64, xp), ReLU()]
    blocks, c_out, hw = _stages(block, counts, (64, 128, 256, 512), 64, hw, xp, rng, zero_init_residual)
    modules += blocks
    modules += [GlobalAvgPool(), Linear(c_out, num_classes, xp, rng, init="lecun")]
    return _finish(modules, rule, xp, rng, (c, h, w))


def build_resnet20(input_shape, num_classes: int, rule, xp, rng, zero_init_residual: bool = False) -> Network:
    """CIFAR ResNet-20: conv3x3 (16) + BN + ReLU, 3 stages x 3 BasicBlocks
    (16, 32, 64 channels; stride 2 at stages 2 and 3), global average pooling,
    linear. Shortcuts are projections (conv1x1 + BN) where the shape changes.
    """
    c, h, w = _check_image_shape(input_shape, "resnet20")
    conv = Conv2d(c, 16, 3, xp, rng, stride=1, padding=1, bias=False, input_hw=(h, w))
    modules = [conv, BatchNorm2d(16, xp), ReLU()]
    blocks, c_out, _ = _stages(BasicBlock, (3, 3, 3), (16, 32, 64), 16, (h, w), xp, rng, zero_init_residual)
    modules += blocks
    modules += [GlobalAvgPool(), Linear(c_out, num_classes, xp, rng, init="lecun")]
    return _finish(modules, rule, xp, rng, (c, h, w))


def build_convnet(input_shape, num_classes: int, rule, xp, rng, channels=(32, 64), hidden: int = 128,
                  batchnorm: bool = False) -> Network:
    """Small convnet: for each entry of ``channels``, conv3x3 (pad 1) + ReLU +
    maxpool 2x2 (computed as maxpool then ReLU, which is the same function and
    gradient since both are monotone); then flatten, linear(``hidden``) + ReLU (omitted when
    ``hidden`` is 0), linear(``num_classes``). For 1x28x28 and the defaults:
    conv32, pool → 14x14, conv64, pool → 7x7, 3136 → 128 → classes.

    ``batchnorm=True`` puts batch normalisation after every convolution and
    after the hidden linear layer (their biases are then dropped), as in the
    ResNets: each layer's output no longer depends on the scale of its
    weights, which keeps the rules with approximate feedback stable at the
    learning rates backprop uses, and makes Kolen-Pollack's decay of W free
    for those layers.
    """
    c, h, w = _check_image_shape(input_shape, "convnet")
    if not channels or any(int(k) < 1 for k in channels):
        raise ValueError(f"convnet: channels must be positive, got {channels}")
    if int(hidden) < 0:
        raise ValueError(f"convnet: hidden must be >= 0, got {hidden}")
    modules = []
    c_in, hw = c, (h, w)
    for k in channels:
        conv = Conv2d(c_in, int(k), 3, xp, rng, stride=1, padding=1, bias=not batchnorm, input_hw=hw)
        act = ReLU()
        # max pooling commutes with the ReLU (max(maxpool v, 0) = maxpool max(v, 0),
        # with the same gradient): pooling first runs the ReLU on a quarter of the units
        if batchnorm:
            modules += [conv, BatchNorm2d(int(k), xp), MaxPool2d(2, xp=xp), act]
        else:
            conv.mirror_activation = act
            modules += [conv, MaxPool2d(2, xp=xp), act]
        c_in, hw = int(k), (hw[0] // 2, hw[1] // 2)
        if min(hw) < 1:
            raise ValueError(f"convnet: input {tuple(input_shape)} is too small for {len(channels)} poolings")
    modules.append(Flatten())
    n_in = c_in * hw[0] * hw[1]
    if hidden:
        fc = Linear(n_in, int(hidden), xp, rng, init="he", bias=not batchnorm)
        act = ReLU()
        if batchnorm:
            modules += [fc, BatchNorm1d(int(hidden), xp), act]
        else:
            fc.mirror_activation = act
            modules += [fc, act]
        n_in = int(hidden)
    modules.append(Linear(n_in, num_classes, xp, rng, init="lecun"))
    return _finish(modules, rule, xp, rng, (c, h, w))
