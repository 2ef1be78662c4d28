"""
Models and the one flat-parameter view that every algorithm sends over the wire. Which model
a task trains is its record's (tasks/); the OPT checkpoint of task mnli is loaded by transformers.

- ResNet20: the CIFAR ResNet of He et al. (2016), in the paper's 272,474-parameter
  variant (1x1 conv + BatchNorm projection shortcuts where the shape changes).
- DigitsMLP: a small MLP for the offline digits / synthetic tasks.
- DigitsCNN: a small CNN with BatchNorm on the 8x8 digits (task digits_bn, 38,330 parameters).
- flatten_params / load_flat_params: trainable parameters <-> one 1-D fp32 vector.
  BatchNorm running statistics are buffers, not parameters, so they stay at the node.
  A tied weight (OPT's lm_head = embed_tokens) is one parameter: model.parameters()
  yields it once, so it travels once.
"""

import copy
import re

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (He et al. 2016, Fig. 2)."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            # option B projection; this is what takes option A's 269,722 params to the paper's 272,474
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20: 3 stages of 16/32/64 channels, 3 BasicBlocks each."""

    def __init__(self, num_classes=10, blocks_per_stage=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        stages, in_channels = [], 16
        for out_channels, stride in ((16, 1), (32, 2), (64, 2)):
            for block in range(blocks_per_stage):
                stages.append(BasicBlock(in_channels, out_channels, stride if block == 0 else 1))
                in_channels = out_channels
        self.blocks = nn.Sequential(*stages)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class DigitsMLP(nn.Module):
    """One hidden layer; enough for >90% on sklearn digits and for the synthetic task."""

    def __init__(self, in_features=64, hidden=128, num_classes=10):
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, num_classes)
        nn.init.kaiming_normal_(self.hidden.weight, nonlinearity="relu")
        nn.init.zeros_(self.hidden.bias)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x.flatten(1))))


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (16 and 32 channels), each followed by BatchNorm, then a 64-unit hidden
    layer: 38,330 parameters, a stand-in for ResNet-20 whose BatchNorm statistics stay at the nodes
    as ResNet-20's do. Takes the flat 64-pixel digits and views them as 1x8x8 images."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)   # 8x8, then max-pooled to 4x4
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)  # 4x4
        self.bn2 = nn.BatchNorm2d(32)
        self.hidden = nn.Linear(32 * 4 * 4, 64)
        self.out = nn.Linear(64, num_classes)
        for module in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = F.max_pool2d(F.relu(self.bn1(self.conv1(x.view(-1, 1, 8, 8)))), 2)
        out = F.relu(self.bn2(self.conv2(out)))
        return self.out(F.relu(self.hidden(out.flatten(1))))


class FlatBuffer(nn.Module):
    """No network, just n parameters: the model of an emulated run (bench.py)."""

    def __init__(self, n):
        super().__init__()
        self.flat = nn.Parameter(torch.zeros(n))


def trainable_params(model):
    return [p for p in model.parameters() if p.requires_grad]


def num_params(model):
    return sum(p.numel() for p in trainable_params(model))


def flatten_params(model, out=None):
    """All trainable parameters, in model.parameters() order, as one 1-D fp32 tensor.

    With `out` (a preallocated 1-D tensor of num_params elements) the values are
    copied into it and it is returned, so a send buffer can be reused every hop.
    """
    params = trainable_params(model)
    if out is None:
        return torch.cat([p.detach().reshape(-1).float() for p in params])
    total = sum(p.numel() for p in params)
    if out.dim() != 1 or out.numel() != total:
        raise ValueError(f"out has shape {tuple(out.shape)}; expected ({total},) for this model")
    offset = 0
    for p in params:
        out[offset:offset + p.numel()].copy_(p.detach().reshape(-1))
        offset += p.numel()
    return out


@torch.no_grad()
def load_flat_params(model, flat):
    """Copy a flat vector (any float dtype, any device) into the parameters in place.

    In place, so the parameter objects - and the optimizer state keyed by them - survive.
    """
    params = trainable_params(model)
    total = sum(p.numel() for p in params)
    if flat.numel() != total:
        raise ValueError(f"flat vector has {flat.numel()} elements; this model has {total} parameters")
    flat = flat.reshape(-1)
    offset = 0
    for p in params:
        p.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


@torch.no_grad()
def evaluate(model, x, y, batch_size=1000):
    """Mean cross-entropy and accuracy of `model` on (x, y), in eval mode."""
    if isinstance(model, FlatBuffer):
        return float("nan"), float("nan")  # an emulated model predicts nothing
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        bx = x[start:start + batch_size].to(device)
        by = y[start:start + batch_size].to(device)
        logits = model(bx)
        loss_sum += F.cross_entropy(logits, by, reduction="sum").item()
        correct += (logits.argmax(1) == by).sum().item()
    model.train(was_training)
    return loss_sum / len(x), correct / len(x)


# the authors exempt from weight decay the BatchNorm weights and biases inside residual blocks
# (their names: layerK.J.bn1 / bn2; here blocks.J.bn1 / bn2); the stem BatchNorm ("bn", no dot
# before it), the shortcut BatchNorm ("shortcut.1") and the classifier are decayed
IN_BLOCK_BATCHNORM = re.compile(r".*\.bn\d+\.(weight|bias)$")


def weight_decay_groups(model, weight_decay, scope):
    """Optimizer parameter groups: scope "authors" leaves the in-block BatchNorm parameters
    undecayed, scope "all" decays every parameter. An empty group is left out."""
    if scope == "all":
        return [dict(params=list(model.parameters()), weight_decay=weight_decay)]
    decayed, exempt = [], []
    for name, param in model.named_parameters():
        (exempt if IN_BLOCK_BATCHNORM.match(name) else decayed).append(param)
    groups = [dict(params=decayed, weight_decay=weight_decay), dict(params=exempt, weight_decay=0.0)]
    return [group for group in groups if group["params"]]


@torch.no_grad()
def recalibrated_batchnorm(model, batches, num_batches):
    """A copy of `model` whose BatchNorm running statistics are recomputed from scratch as the
    plain average over `num_batches` batches of `batches` (a ShardBatches); `model` itself,
    whose statistics training keeps updating, is left untouched."""
    recalibrated = copy.deepcopy(model)
    norms = [m for m in recalibrated.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a cumulative average over the batches seen
    recalibrated.train()
    device = next(recalibrated.parameters()).device
    for _ in range(num_batches):
        bx, _ = batches.next_batch()
        recalibrated(bx.to(device))
    return recalibrated.eval()
