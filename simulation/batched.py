"""
Batched local updates for the simulator: the local updates in flight at one virtual
moment have fixed inputs (the model each started from, its node's optimizer state,
BatchNorm statistics and next batches, its lr), so they are computed together, as
one vectorized computation over the nodes (torch.func.vmap of grad over
functional_call), when the clock first needs one of their results.

Every node's model parameters, SGD momentum buffers and BatchNorm buffers live in
one stacked tensor per name (a "bank", a row per node registered); the node's own
module and optimizer state hold views of its row, so evaluation and anything else
that reads a node sees what the sequential path (algorithms.local_update) leaves.

The optimizer step is torch.optim.SGD's (PyTorch 2.x single-tensor path), its settings
read per parameter from the node's param_groups (the lr is the update's, as local_update
sets it): d_p = g + wd p; buf = momentum buf + d_p (a missing buffer counts as zero,
which gives torch's buf = d_p); nesterov: d_p = d_p + momentum buf, else d_p = buf;
p -= lr d_p.
"""
import contextlib
import copy

import torch
import torch.nn as nn
from torch.func import functional_call, grad_and_value, vmap

from core import algorithms

# On a CPU, fewer updates than this in flight are computed one at a time (algorithms.local_update on
# the node, whose module and optimizer state are views of its bank rows): vmap's fixed cost made a
# lone digits-MLP update 2-3 times slower than local_update, and it broke even at 3-4 updates
# (2 loaded cores, torch 2.13). On a GPU every flush is batched.
CPU_MIN_BATCH = 4


def can_batch(node):
    """Whether node's local update is one this module computes exactly as local_update does:
    a real model (not an emulated one) under plain SGD (no dampening, no maximize: Adam is left
    to the sequential path). Whether the task's model and loss run under vmap at all is its
    record's `batchable` (tasks/), which the simulator checks beside this."""
    optimizer = node.optimizer
    return (node.emulate_compute is None and type(optimizer) is torch.optim.SGD
            and all(group["dampening"] == 0 and not group["maximize"] for group in optimizer.param_groups)
            and all(p.requires_grad for p in node.model.parameters()))


@contextlib.contextmanager
def aten_kernels():
    """No oneDNN on the CPU: in torch 2.13 its grouped convolution (what vmap makes of a conv over
    stacked weights) gave ResNet-20's first-layer weight gradients a relative error of 3e-3, and
    even its plain convolution gave one of 3e-2 on some batches, against float64; ATen's own
    kernels stay within 1e-5."""
    enabled = torch.backends.mkldnn.set_flags(False)[0]
    try:
        yield
    finally:
        torch.backends.mkldnn.set_flags(enabled)


class LossOf(nn.Module):
    """A node's loss as a module, so functional_call can swap in every node's parameters."""
    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, bx, by):
        return self.loss_fn(self.model, bx, by)


class PendingUpdate:
    """One node's local update, computed with the others in flight when its loss is first asked for."""
    __slots__ = ("batch", "node_id", "params", "lr", "mean_loss")

    def __init__(self, batch, node_id, params, lr):
        self.batch, self.node_id, self.params, self.lr, self.mean_loss = batch, node_id, params, lr, None

    def loss(self):
        """The update's mean loss over its tau steps; its params hold the result from then on."""
        if self.mean_loss is None:
            self.batch.flush()
        return self.mean_loss


class BatchedUpdates:
    """The local updates of nodes that share one architecture, task and optimizer settings.
    The banks hold a row per node registered (`add`: the simulator registers a node when it
    builds it, which at V = 100,000 is only the nodes a walk reaches); they grow by doubling,
    and every node's views move to the new banks."""
    def __init__(self, nodes, tau, min_batch=None):
        self.tau = tau
        self.pending = []  # PendingUpdate, at most one per node (a node computes one update at a time)
        first = nodes[0]
        self.device = first.device
        # flushes of fewer updates run them one at a time (CPU_MIN_BATCH)
        self.min_batch = min_batch or (1 if self.device.type == "cuda" else CPU_MIN_BATCH)
        template = copy.deepcopy(first.model).train()
        self.loss_module = LossOf(template, first.loss_fn)
        self.param_names = [name for name, _ in template.named_parameters()]  # flatten_params order
        self.shapes = [p.shape for p in template.parameters()]
        # per parameter, as torch.optim.SGD reads them: momentum, nesterov, weight_decay (every node's
        # optimizer is built alike by algorithms.make_node, so node 0's groups stand for all)
        group_of = {p: group for group in first.optimizer.param_groups for p in group["params"]}
        self.groups = [group_of[p] for p in first.model.parameters()]
        self.nodes, self.row_of = {}, {}  # node id -> node, and its row in every bank
        self.param_bank = {name: empty_bank(p) for name, p in template.named_parameters()}
        self.buffer_bank = {name: empty_bank(b) for name, b in template.named_buffers()}
        self.momentum_bank = {name: empty_bank(p) for (name, p), group in zip(template.named_parameters(), self.groups)
                              if group["momentum"]}
        for node in nodes:
            self.add(node)
        # per node: loss and gradients at its own parameters and BatchNorm buffers (updated in place)
        self.loss_and_grads = vmap(grad_and_value(
            lambda params, buffers, bx, by: functional_call(self.loss_module, (params, buffers), (bx, by))))

    def banks(self):
        return [self.param_bank, self.buffer_bank, self.momentum_bank]

    def add(self, node):
        """Give node a row in every bank, holding its parameters and buffers (and its momentum: zeros
        while it has not stepped, with which buf = momentum buf + d_p is torch's buf = d_p)."""
        row = self.row_of[node.node_id] = len(self.row_of)
        self.nodes[node.node_id] = node
        if row == len(next(iter(self.param_bank.values()))):
            for bank in self.banks():
                for name, stacked in bank.items():
                    bank[name] = torch.cat([stacked, torch.empty_like(stacked[:max(row, 1)])])
            for v in self.nodes:
                if v != node.node_id:
                    self.point_at_rows(v)
        with torch.no_grad():
            for name, tensor in node.model.named_parameters():
                self.param_bank[name][row].copy_(tensor)
            for name, tensor in node.model.named_buffers():
                self.buffer_bank[name][row].copy_(tensor)
            for name, param in zip(self.param_names, node.model.parameters()):
                if name in self.momentum_bank:
                    buffer = node.optimizer.state.get(param, {}).get("momentum_buffer")
                    self.momentum_bank[name][row].copy_(torch.zeros_like(param) if buffer is None else buffer)
        self.point_at_rows(node.node_id)

    def point_at_rows(self, v):
        """Node v's module and optimizer state view its bank rows."""
        node, row = self.nodes[v], self.row_of[v]
        for name, stacked in self.param_bank.items():
            set_param_row(node.model, name, stacked[row])
        for name, stacked in self.buffer_bank.items():
            set_buffer_row(node.model, name, stacked[row])
        if any("momentum_buffer" in node.optimizer.state.get(p, {}) for p in node.model.parameters()):
            self.publish_momentum(v)

    def submit(self, node_id, params, lr):
        """Node node_id's tau steps from the flat vector `params` (overwritten with the result, as
        local_update does) at this lr; computed at the next flush."""
        update = PendingUpdate(self, node_id, params, lr)
        self.pending.append(update)
        return update

    def flush(self):
        """Compute every pending update together."""
        if not self.pending:
            return
        updates, self.pending = self.pending, []
        if len(updates) < self.min_batch:
            for update in updates:
                self.publish_momentum(update.node_id)  # torch's SGD steps the bank's row in place
                update.mean_loss = algorithms.local_update(self.nodes[update.node_id], update.params, self.tau, update.lr)
            return
        rows = torch.tensor([self.row_of[u.node_id] for u in updates], device=self.device)
        count = len(updates)
        batches_x, batches_y = self.draw_batches(updates)
        flat = torch.stack([u.params.to(self.device, torch.float32) for u in updates])
        params, offset = {}, 0
        for name, shape in zip(self.param_names, self.shapes):
            # contiguous: the optimizer's elementwise passes over a column slice ran at half speed
            params["model." + name] = flat[:, offset:offset + shape.numel()].reshape(count, *shape).contiguous()
            offset += shape.numel()
        buffers = {"model." + name: bank[rows] for name, bank in self.buffer_bank.items()}
        momentum = {name: bank[rows] for name, bank in self.momentum_bank.items()}
        # every parameter group steps at the update's lr, as local_update sets it
        lrs = torch.tensor([u.lr for u in updates], device=self.device)
        total_loss = torch.zeros(count, device=self.device)
        for step in range(self.tau):
            bx = batches_x[:, step].to(self.device, non_blocking=True)
            by = batches_y[:, step].to(self.device, non_blocking=True)
            with aten_kernels():
                grads, loss = self.loss_and_grads(params, buffers, bx, by)
            with torch.no_grad():
                for name, group in zip(self.param_names, self.groups):
                    key = "model." + name
                    param, d_p = params[key], grads[key]
                    if group["weight_decay"]:
                        d_p = d_p.add(param, alpha=group["weight_decay"])
                    if group["momentum"]:
                        buf = momentum[name].mul_(group["momentum"]).add_(d_p)
                        d_p = d_p.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                    params[key] = param.addcmul(lrs.view(-1, *[1] * (param.dim() - 1)), d_p, value=-1)
            total_loss += loss.detach()
        with torch.no_grad():
            for name in self.param_names:
                self.param_bank[name].index_copy_(0, rows, params["model." + name])
            for name, bank in self.buffer_bank.items():
                bank.index_copy_(0, rows, buffers["model." + name])
            for name, bank in self.momentum_bank.items():
                bank.index_copy_(0, rows, momentum[name])
            result = torch.cat([params["model." + name].reshape(count, -1) for name in self.param_names], dim=1)
        for i, (update, mean_loss) in enumerate(zip(updates, total_loss.tolist())):
            update.params.copy_(result[i])
            update.mean_loss = mean_loss / self.tau
            self.publish_momentum(update.node_id)

    def draw_batches(self, updates):
        """Every update's tau batches, x and y of shape (updates, tau, batch, ...), drawn from each node in
        the order the sequential path would. Without augmentation all nodes share one dataset, so the
        rows are gathered at once instead of a gather per batch."""
        streams = [self.nodes[u.node_id].batches for u in updates]
        if any(stream.augment is not None or stream.x is not streams[0].x for stream in streams):
            draws = [[stream.next_batch() for _ in range(self.tau)] for stream in streams]
            return (torch.stack([torch.stack([bx for bx, _ in draw]) for draw in draws]),
                    torch.stack([torch.stack([by for _, by in draw]) for draw in draws]))
        rows = torch.stack([torch.stack([stream.next_indices() for _ in range(self.tau)]) for stream in streams])
        return streams[0].x[rows], streams[0].y[rows]

    def publish_momentum(self, v):
        """The node's optimizer state holds views of its momentum rows once it has stepped, as torch's SGD does."""
        node, row = self.nodes[v], self.row_of[v]
        for param, name in zip(node.model.parameters(), self.param_names):
            if name in self.momentum_bank:
                node.optimizer.state[param]["momentum_buffer"] = self.momentum_bank[name][row]


def empty_bank(tensor):
    """A bank for `tensor`, with room for one node's row."""
    return torch.empty((1, *tensor.shape), dtype=tensor.dtype, device=tensor.device)


def set_param_row(model, name, row):
    model.get_parameter(name).data = row


def set_buffer_row(model, name, row):
    module_name, _, buffer_name = name.rpartition(".")
    model.get_submodule(module_name)._buffers[buffer_name] = row
