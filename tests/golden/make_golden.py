#!/usr/bin/env python3
"""Golden fixtures for the ursa CNN engine, computed with PyTorch.

Run (from the repository root; writes into tests/golden/ next to this script):

    /usr/bin/python3 tests/golden/make_golden.py

Needs Debian's python3-torch (1.13) and python3-torchvision. The output is
deterministic: running it twice gives identical bytes.

File format (.bin): a sequence of records. Each record is an ASCII header line
`NAME NDIM D0 D1 ... D(NDIM-1)\n` (single spaces) immediately followed by
prod(D) little-endian float32 values in C order. Scalars are NDIM 1, D0 1.
Integer data (class targets) are stored as float32.

Every weight and input comes from the hash h(i, p) below (not torch's RNG):
element i of tensor number p gets a float64 value computed from u = h(i, p),
then the whole tensor is rounded to float32. All computing is done in float64
(model.double()) on one thread, results are rounded to float32 for storage.

  conv / linear weight : (2u-1) * sqrt(6/fan_in), fan_in = numel / shape[0]
  conv / linear bias   : (2u-1) * 0.1
  bn weight            : 0.8 + 0.4u
  bn bias              : (2u-1) * 0.2
  bn running_mean      : (2u-1) * 0.2
  bn running_var       : 0.5 + u
  inputs, dy           : (2u-1)       (x: p=1000, dy: p=2000 unless noted)
For a model, p is the index of the tensor in model.state_dict() order,
skipping num_batches_tracked (see fill_model).

Files:
  conv.bin     Conv2d forward/backward, prefixes a. b. c.:
               a) Conv2d(3,4,k3,s2,p1,bias) x[2,3,7,7]
               b) Conv2d(4,6,k1,s1,p0,no bias) x[2,4,5,5]
               c) Conv2d(3,5,k7,s2,p3,no bias) x[1,3,11,11]
               records x weight [bias] y dy dx dweight [dbias]
  bn.bin       BatchNorm2d(3) x[4,3,5,5]: train forward/backward, running stats
               update, eval forward; same for BatchNorm1d(6) x[5,6] (prefix bn1d.)
  pool.bin     MaxPool2d(3,2,1) (max.), AvgPool2d(2,2) (avg.),
               AdaptiveConcatPool2d = cat([amax(1), aavg(1)], 1) (cat.) on x[2,3,9,9]
  linear.bin   Linear(6,5) x[4,6] forward/backward; ReLU x[3,7] (p=1001) (relu.)
  loss.bin     cross_entropy (mean) on logits[4,5] = 3*(2u-1) (p=1000), targets [0,3,4,1]
  block.bin    torchvision BasicBlock(4,8,stride 2, 1x1 conv+BN downsample),
               train mode, x[2,4,8,8]: params, y, dx, d.<param>, after.<running stat>
  resnet18.bin torchvision resnet18(num_classes=10) filled by fill_model (weights
               NOT stored), x[2,3,64,64]: y_eval, and in train mode y_train,
               targets [3,7], loss, a few gradients and running stats after
  adamw.bin    3 AdamW steps (lr 1e-2, betas (0.9,0.99), eps 1e-8, wd 1e-2) on a
               tiny conv/bn/relu/pool/linear net: init.*, x, targets, loss0..2, final.*
  head.bin     fast.ai v1 head (8 channels in, 4 classes) in eval mode: params, x, y
  tiny.bin, tiny_folded.onnx, tiny_keepbn.onnx
               TinyNet (a 4-stage resnet of torchvision BasicBlocks, 8/8/16/16/32
               channels, 5 classes, torchvision's module names) in eval mode,
               x[2,3,48,48]: records x y y_softmax; the model exported by
               torch.onnx (opset 13, dynamic batch) with default settings (BN
               folded into the convs) and with TrainingMode.PRESERVE and no
               constant folding (BatchNormalization nodes kept)
  resnet18_params.txt, resnet34_params.txt
               `NAME KIND D0 D1 ...` per state_dict float tensor, in order
               (KIND: conv_w lin_w bias bn_w bn_b bn_rm bn_rv)
"""
import copy
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

OUT = os.path.dirname(os.path.abspath(__file__))
P_X = 1000
P_DY = 2000

torch.set_num_threads(1)
torch.manual_seed(0)  # unused for values; keeps anything stray deterministic


# ---------------------------------------------------------------- the hash
def h_scalar(i, p):
    x = (i * 0x9E3779B1 + p * 0x85EBCA77 + 1) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    x = (x * 0x297A2D39) & 0xFFFFFFFF
    x ^= x >> 15
    return x / 4294967296.0


def h(n, p):
    """u = h(i, p) for i in 0..n-1, as float64 (exact same values as h_scalar)."""
    m = np.uint64(0xFFFFFFFF)
    i = np.arange(n, dtype=np.uint64)
    x = (i * np.uint64(0x9E3779B1) + np.uint64((p * 0x85EBCA77 + 1) & 0xFFFFFFFF)) & m
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x2C1B3C6D)) & m
    x ^= x >> np.uint64(12)
    x = (x * np.uint64(0x297A2D39)) & m
    x ^= x >> np.uint64(15)
    return x.astype(np.float64) / 4294967296.0


def _check_hash():
    for p in (0, 1, 7, 1000, 2000):
        v = h(5000, p)
        for i in (0, 1, 2, 3, 17, 255, 4096, 4999):
            assert v[i] == h_scalar(i, p), (i, p)
    big = 512 * 512 * 9 + 5
    assert h(big, 3)[big - 1] == h_scalar(big - 1, 3)


def hvals(shape, p, kind):
    """float32 tensor of the given shape filled from tensor number p."""
    shape = tuple(shape)
    n = int(np.prod(shape)) if shape else 1
    u = h(n, p)
    if kind in ("conv_w", "lin_w"):
        fan_in = n // shape[0]
        v = (2.0 * u - 1.0) * math.sqrt(6.0 / fan_in)
    elif kind == "bias":
        v = (2.0 * u - 1.0) * 0.1
    elif kind == "bn_w":
        v = 0.8 + 0.4 * u
    elif kind in ("bn_b", "bn_rm"):
        v = (2.0 * u - 1.0) * 0.2
    elif kind == "bn_rv":
        v = 0.5 + u
    elif kind == "input":
        v = 2.0 * u - 1.0
    else:
        raise ValueError(kind)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def inp(shape, p=P_X):
    """float32-valued input tensor, returned as float64 for computing."""
    return hvals(shape, p, "input").double()


# ---------------------------------------------------------------- models
def param_kinds(model):
    """[(name, kind, shape)] for every float state_dict tensor, in order."""
    mods = dict(model.named_modules())
    out = []
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        mname, _, leaf = name.rpartition(".")
        m = mods[mname]
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            kind = {"weight": "bn_w", "bias": "bn_b",
                    "running_mean": "bn_rm", "running_var": "bn_rv"}[leaf]
        elif isinstance(m, nn.Conv2d):
            kind = {"weight": "conv_w", "bias": "bias"}[leaf]
        elif isinstance(m, nn.Linear):
            kind = {"weight": "lin_w", "bias": "bias"}[leaf]
        else:
            raise TypeError("%s: %s" % (name, type(m).__name__))
        out.append((name, kind, tuple(t.shape)))
    return out


def fill_model(model):
    sd = model.state_dict()  # tensors share storage with the module
    with torch.no_grad():
        for p, (name, kind, shape) in enumerate(param_kinds(model)):
            sd[name].copy_(hvals(shape, p, kind))
    return model


def float_state(model):
    return [(n, t.detach().clone()) for n, t in model.state_dict().items()
            if not n.endswith("num_batches_tracked")]


class TinyNet(nn.Module):
    """torchvision's ResNet, shrunk: same module names and forward, 4 stages of
    one BasicBlock each (8, 16, 16, 32 channels), 5 classes."""

    def __init__(self, num_classes=5):
        from torchvision.models.resnet import BasicBlock, conv1x1
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2, downsample=nn.Sequential(
            conv1x1(8, 16, 2), nn.BatchNorm2d(16))))
        self.layer3 = nn.Sequential(BasicBlock(16, 16))
        self.layer4 = nn.Sequential(BasicBlock(16, 32, stride=2, downsample=nn.Sequential(
            conv1x1(16, 32, 2), nn.BatchNorm2d(32))))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):  # torchvision ResNet._forward_impl
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


class AdaptiveConcatPool2d(nn.Module):
    """fast.ai v1: cat([AdaptiveMaxPool2d(1), AdaptiveAvgPool2d(1)], 1)."""

    def __init__(self, sz=1):
        super().__init__()
        self.mp = nn.AdaptiveMaxPool2d(sz)
        self.ap = nn.AdaptiveAvgPool2d(sz)

    def forward(self, x):
        return torch.cat([self.mp(x), self.ap(x)], 1)


# ---------------------------------------------------------------- output
def save(path, records):
    names = set()
    with open(path, "wb") as f:
        for name, t in records:
            assert " " not in name and name not in names, name
            names.add(name)
            if isinstance(t, torch.Tensor):
                a = t.detach().cpu().double().numpy()
            else:
                a = np.asarray(t, dtype=np.float64)
            if a.ndim == 0:
                a = a.reshape(1)
            a = np.ascontiguousarray(a.astype("<f4"))
            assert np.all(np.isfinite(a)), name
            hdr = "%s %d %s\n" % (name, a.ndim, " ".join(str(d) for d in a.shape))
            f.write(hdr.encode("ascii"))
            f.write(a.tobytes(order="C"))
    print("%-14s %7d bytes, %d records" % (os.path.basename(path), os.path.getsize(path), len(records)))


def grad_case(mod, x, prefix, dnames):
    """forward + backward(dy) for a single module; returns records."""
    x = x.clone().requires_grad_(True)
    y = mod(x)
    dy = inp(y.shape, P_DY)
    y.backward(dy)
    recs = [(prefix + "y", y), (prefix + "dy", dy), (prefix + "dx", x.grad)]
    for pname, p in mod.named_parameters():
        recs.append((prefix + dnames(pname), p.grad))
    return recs


# ---------------------------------------------------------------- cases
def case_conv():
    recs = []
    cfg = [("a.", dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, bias=True), (2, 3, 7, 7)),
           ("b.", dict(in_channels=4, out_channels=6, kernel_size=1, stride=1, padding=0, bias=False), (2, 4, 5, 5)),
           ("c.", dict(in_channels=3, out_channels=5, kernel_size=7, stride=2, padding=3, bias=False), (1, 3, 11, 11))]
    for pre, kw, xs in cfg:
        m = fill_model(nn.Conv2d(**kw)).double()
        x = inp(xs)
        recs.append((pre + "x", x))
        recs += [(pre + n, t) for n, t in float_state(m)]
        recs += grad_case(m, x, pre, lambda n: "d" + n)
    save(os.path.join(OUT, "conv.bin"), recs)


def bn_records(bn, x, pre):
    m = fill_model(bn).double()
    m_eval = copy.deepcopy(m).eval()
    recs = [(pre + "x", x)] + [(pre + n, t) for n, t in float_state(m)]
    m.train()
    xg = x.clone().requires_grad_(True)
    y = m(xg)
    dy = inp(y.shape, P_DY)
    y.backward(dy)
    recs += [(pre + "y_train", y),
             (pre + "running_mean_after", m.running_mean),
             (pre + "running_var_after", m.running_var),
             (pre + "dy", dy), (pre + "dx", xg.grad),
             (pre + "dweight", m.weight.grad), (pre + "dbias", m.bias.grad)]
    with torch.no_grad():
        recs.append((pre + "y_eval", m_eval(x)))
    return recs


def case_bn():
    recs = bn_records(nn.BatchNorm2d(3, eps=1e-5, momentum=0.1), inp((4, 3, 5, 5)), "")
    recs += bn_records(nn.BatchNorm1d(6, eps=1e-5, momentum=0.1), inp((5, 6)), "bn1d.")
    save(os.path.join(OUT, "bn.bin"), recs)


def case_pool():
    x = inp((2, 3, 9, 9))
    assert len(np.unique(x.numpy())) == x.numel(), "ties in pool input"
    recs = [("x", x)]
    for pre, m in (("max.", nn.MaxPool2d(3, 2, 1)), ("avg.", nn.AvgPool2d(2, 2)),
                   ("cat.", AdaptiveConcatPool2d())):
        r = grad_case(m.double(), x, pre, None)
        recs += [r[1], r[0], r[2]]  # dy, y, dx
    save(os.path.join(OUT, "pool.bin"), recs)


def case_linear():
    m = fill_model(nn.Linear(6, 5)).double()
    x = inp((4, 6))
    recs = [("x", x)] + float_state(m) + grad_case(m, x, "", lambda n: "d" + n)
    xr = inp((3, 7), 1001)
    recs += [("relu.x", xr)] + grad_case(nn.ReLU(), xr, "relu.", None)
    save(os.path.join(OUT, "linear.bin"), recs)


def case_loss():
    u = h(20, P_X)
    logits = torch.from_numpy(((2.0 * u - 1.0) * 3.0).astype(np.float32).reshape(4, 5)).double()
    tgt = torch.tensor([0, 3, 4, 1])
    lg = logits.clone().requires_grad_(True)
    loss = F.cross_entropy(lg, tgt)
    loss.backward()
    save(os.path.join(OUT, "loss.bin"),
         [("logits", logits), ("targets", tgt), ("loss", loss), ("dlogits", lg.grad)])


def case_block():
    from torchvision.models.resnet import BasicBlock, conv1x1
    m = BasicBlock(4, 8, stride=2, downsample=nn.Sequential(conv1x1(4, 8, 2), nn.BatchNorm2d(8)))
    m = fill_model(m).double().train()
    x = inp((2, 4, 8, 8))
    recs = float_state(m) + [("x", x)]
    r = grad_case(m, x, "", lambda n: "d." + n)
    recs += [r[0], r[1], r[2]] + r[3:]
    recs += [("after." + n, t) for n, t in m.named_buffers() if not n.endswith("num_batches_tracked")]
    save(os.path.join(OUT, "block.bin"), recs)


def write_params(model, path):
    with open(path, "w") as f:
        for name, kind, shape in param_kinds(model):
            f.write("%s %s %s\n" % (name, kind, " ".join(str(d) for d in shape)))
    print("%-14s %7d bytes" % (os.path.basename(path), os.path.getsize(path)))


def case_resnet18():
    base = fill_model(torchvision.models.resnet18(num_classes=10)).double()
    x = inp((2, 3, 64, 64))
    recs = [("x", x)]
    m = copy.deepcopy(base).eval()
    with torch.no_grad():
        recs.append(("y_eval", m(x)))
    m = copy.deepcopy(base).train()
    tgt = torch.tensor([3, 7])
    y = m(x)
    loss = F.cross_entropy(y, tgt)
    loss.backward()
    P = dict(m.named_parameters())
    B = dict(m.named_buffers())
    recs += [("y_train", y), ("targets", tgt), ("loss", loss)]
    for n in ("conv1.weight", "bn1.weight", "layer4.1.bn2.bias", "fc.weight", "fc.bias"):
        recs.append(("d." + n, P[n].grad))
    for n in ("bn1.running_mean", "layer4.1.bn2.running_var"):
        recs.append(("after." + n, B[n]))
    save(os.path.join(OUT, "resnet18.bin"), recs)
    write_params(base, os.path.join(OUT, "resnet18_params.txt"))
    write_params(torchvision.models.resnet34(num_classes=10), os.path.join(OUT, "resnet34_params.txt"))


def case_adamw():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    m = fill_model(m).double().train()
    x = inp((4, 3, 6, 6))
    tgt = torch.tensor([0, 2, 1, 2])
    recs = [("init." + n, t) for n, t in float_state(m)] + [("x", x), ("targets", tgt)]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=1e-2)
    for step in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(m(x), tgt)
        loss.backward()
        opt.step()
        recs.append(("loss%d" % step, loss))
    recs += [("final." + n, t) for n, t in float_state(m)]
    save(os.path.join(OUT, "adamw.bin"), recs)


def case_head():
    m = nn.Sequential(AdaptiveConcatPool2d(), nn.Flatten(), nn.BatchNorm1d(16), nn.Dropout(0.25),
                      nn.Linear(16, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Dropout(0.5),
                      nn.Linear(512, 4))
    m = fill_model(m).double().eval()
    x = inp((2, 8, 3, 3))
    with torch.no_grad():
        y = m(x)
    save(os.path.join(OUT, "head.bin"), float_state(m) + [("x", x), ("y", y)])


def onnx_export(model, x, path, **kw):
    """torch.onnx.export of a float32 model in eval mode, opset 13, dynamic batch."""
    torch.onnx.export(model, x, path, opset_version=13, input_names=["input"],
                      output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **kw)
    print("%-16s %7d bytes" % (os.path.basename(path), os.path.getsize(path)))


def case_tiny():
    base = fill_model(TinyNet()).eval()
    x = inp((2, 3, 48, 48))
    m = copy.deepcopy(base).double()
    with torch.no_grad():
        y = m(x)
    save(os.path.join(OUT, "tiny.bin"), [("x", x), ("y", y), ("y_softmax", F.softmax(y, 1))])
    xf = x.float()
    onnx_export(copy.deepcopy(base), xf, os.path.join(OUT, "tiny_folded.onnx"))
    onnx_export(copy.deepcopy(base), xf, os.path.join(OUT, "tiny_keepbn.onnx"),
                training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    for f, bn in (("tiny_folded.onnx", False), ("tiny_keepbn.onnx", True)):
        with open(os.path.join(OUT, f), "rb") as fh:
            assert (b"BatchNormalization" in fh.read()) == bn, f


def main():
    _check_hash()
    case_conv()
    case_bn()
    case_pool()
    case_linear()
    case_loss()
    case_block()
    case_resnet18()
    case_adamw()
    case_head()
    case_tiny()
    for f in sorted(os.listdir(OUT)):
        if f.endswith(".bin"):
            assert os.path.getsize(os.path.join(OUT, f)) < 300 * 1024, f


if __name__ == "__main__":
    sys.exit(main())
