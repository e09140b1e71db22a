#!/usr/bin/python3
"""export_resnet.py: export a randomly initialised torchvision ResNet to ONNX.

    ops/peers/export_resnet.py ARCH OUT.onnx [--keep-bn] [--random-bn] [--size 224] [--classes 1000]
                               [--weights imagenet|FILE.pth]

ARCH is resnet18 or resnet34. Weights come from torch.manual_seed(0) (no
pretrained weights are downloadable here), or with --weights from
torchvision's ImageNet weights (imagenet: downloaded by torchvision, which
needs the internet) or a state_dict file saved from the same architecture
(FILE.pth): the body `ursa train --pretrained` fine-tunes; the model is in eval mode, and the
export uses opset 13, input "input" [B,3,S,S], output "output" [B,classes],
with a dynamic batch axis.

Default: training=EVAL with constant folding, so torch's eval peephole folds
every BatchNormalization into the preceding Conv.
--keep-bn: training=PRESERVE (model still in eval mode) and no constant
folding, so the BatchNormalization nodes stay in the graph (inference form,
using running statistics).
--random-bn: after the seed-0 init, give every BatchNorm random weight, bias,
running_mean and running_var (torch.Generator seeded 1). torchvision's init
makes all of them 1/0/0/1, so (a) folding BN is numerically trivial and (b)
torch's exporter deduplicates the many identical initializers and emits
"Identity" nodes on initializers (16 of them for resnet18 default, 72 with
--keep-bn). Random BN parameters make folding non-trivial and leave no
identical initializers, hence no Identity nodes.

The op-type histogram of the written file goes to stderr.
"""
import argparse
import collections
import sys


def _varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf):
    """Yield (field_number, wire_type, value) of one protobuf message."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            val, i = buf[i:i + ln], i + ln
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wt)
        yield field, wt, val


def op_types_raw(path):
    """Op types of the main graph without the onnx module: ModelProto.graph
    (field 7) -> GraphProto.node (field 1) -> NodeProto.op_type (field 4)."""
    with open(path, "rb") as f:
        model = f.read()
    ops = []
    for fm, wm, graph in _fields(model):
        if fm != 7 or wm != 2:
            continue
        for fg, wg, node in _fields(graph):
            if fg != 1 or wg != 2:
                continue
            for fn, wn, val in _fields(node):
                if fn == 4 and wn == 2:
                    ops.append(bytes(val).decode())
    return ops


def op_types(path):
    """Return (op types of the main graph, how they were read)."""
    try:
        import onnx
    except ImportError:
        return op_types_raw(path), "raw protobuf parse (onnx module not installed)"
    model = onnx.load(path)
    onnx.checker.check_model(model)
    return [n.op_type for n in model.graph.node], "onnx %s, check_model passed" % onnx.__version__


def main():
    ap = argparse.ArgumentParser(description="export a seed-0 torchvision ResNet to ONNX (opset 13)")
    ap.add_argument("arch", choices=["resnet18", "resnet34"])
    ap.add_argument("out", help="output .onnx path")
    ap.add_argument("--keep-bn", action="store_true",
                    help="keep BatchNormalization nodes (training=PRESERVE, no constant folding)")
    ap.add_argument("--random-bn", action="store_true",
                    help="randomise BatchNorm weight/bias/running stats (non-trivial BN, no Identity nodes)")
    ap.add_argument("--size", type=int, default=224, help="input height=width of the example input (default 224)")
    ap.add_argument("--classes", type=int, default=1000, help="number of output classes (default 1000)")
    ap.add_argument("--weights", default="",
                    help="imagenet (torchvision's IMAGENET1K_V1, downloaded) or a state_dict .pth file")
    args = ap.parse_args()

    import torch
    import torchvision

    torch.manual_seed(0)
    if args.weights == "imagenet":
        model = getattr(torchvision.models, args.arch)(weights="IMAGENET1K_V1")
    else:
        model = getattr(torchvision.models, args.arch)(weights=None, num_classes=args.classes)
        if args.weights:
            model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    if args.random_bn:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    c = mod.num_features
                    mod.weight.copy_(0.5 + torch.rand(c, generator=g))
                    mod.bias.copy_(0.1 * torch.randn(c, generator=g))
                    mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                    mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
    model.eval()
    x = torch.randn(1, 3, args.size, args.size)

    kw = dict(
        export_params=True,
        opset_version=13,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    if args.keep_bn:
        kw.update(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    else:
        kw.update(training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True)
    with torch.no_grad():
        torch.onnx.export(model, x, args.out, **kw)

    ops, how = op_types(args.out)
    hist = collections.Counter(ops)
    print("export_resnet: %s -> %s (%s%s, size %d, classes %d, torch %s)"
          % (args.arch, args.out, "BatchNormalization kept" if args.keep_bn else "BN folded into Conv",
             ", random BN params" if args.random_bn else "", args.size, args.classes, torch.__version__), file=sys.stderr)
    print("export_resnet: %d nodes, read with %s" % (len(ops), how), file=sys.stderr)
    for op, n in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])):
        print("  %-20s %d" % (op, n), file=sys.stderr)
    nbn = hist.get("BatchNormalization", 0)
    if args.keep_bn and nbn == 0:
        print("export_resnet: ERROR: --keep-bn but the graph has no BatchNormalization", file=sys.stderr)
        return 1
    if not args.keep_bn and nbn != 0:
        print("export_resnet: ERROR: %d BatchNormalization nodes were not folded" % nbn, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
