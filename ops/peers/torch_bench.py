#!/usr/bin/python3
"""torch_bench.py: PyTorch peer numbers for ursa's model benchmark.

    ops/peers/torch_bench.py --arch resnet18|resnet34 --mode latency|train
        [--batch B] [--threads 2] [--iters N] [--warmup W]
        [--optimizer sgd|adam] [--size 224] [--classes 1000]

latency: eval mode, torch.no_grad, forward of a random [B,3,S,S] batch
         (default B=1); median wall time over N iterations after W warm-up
         iterations. throughput_ips = B / median.
train:   train mode, random data and labels (fixed, generated once),
         cross-entropy loss, SGD (lr 0.01, momentum 0.9) or Adam (lr 1e-3);
         one iteration = zero_grad + forward + loss + backward + step
         (default B=16). throughput_ips = B / median iteration time.

Weights are randomly initialised with torch.manual_seed(0) (no pretrained
weights). Prints exactly one line of key=value pairs on stdout, e.g.
  peer=pytorch arch=resnet18 mode=latency batch=1 threads=2 latency_ms=40.1 throughput_ips=24.9 peak_rss_mb=310
peak_rss_mb is getrusage(RUSAGE_SELF).ru_maxrss of the whole process (it
includes the torch library itself); base_rss_mb is the same measure taken
after "import torch" and before the model is built.
"""
import argparse
import resource
import statistics
import sys
import time


def rss_mb():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description="PyTorch peer benchmark (ResNet latency / training throughput)")
    ap.add_argument("--arch", required=True, choices=["resnet18", "resnet34"])
    ap.add_argument("--mode", required=True, choices=["latency", "train"])
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 1 for latency, 16 for train)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default 50 latency, 10 train)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 5 latency, 2 train)")
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="train mode optimizer (default sgd)")
    ap.add_argument("--size", type=int, default=224, help="input height=width (default 224)")
    ap.add_argument("--classes", type=int, default=1000, help="number of classes (default 1000)")
    args = ap.parse_args()

    train = args.mode == "train"
    batch = args.batch if args.batch is not None else (16 if train else 1)
    iters = args.iters if args.iters is not None else (10 if train else 50)
    warmup = args.warmup if args.warmup is not None else (2 if train else 5)
    if batch < 1 or iters < 1 or warmup < 0 or args.threads < 1:
        ap.error("batch, iters and threads must be >= 1, warmup >= 0")

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set (only possible before any parallel work)
    base_rss = rss_mb()

    torch.manual_seed(0)
    model = getattr(torchvision.models, args.arch)(weights=None, num_classes=args.classes)
    x = torch.randn(batch, 3, args.size, args.size)
    times = []

    if not train:
        model.eval()
        with torch.no_grad():
            for i in range(warmup + iters):
                t0 = time.perf_counter()
                model(x)
                t1 = time.perf_counter()
                if i >= warmup:
                    times.append(t1 - t0)
    else:
        model.train()
        y = torch.randint(0, args.classes, (batch,))
        loss_fn = torch.nn.CrossEntropyLoss()
        if args.optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            t1 = time.perf_counter()
            if i >= warmup:
                times.append(t1 - t0)
        if not torch.isfinite(loss):
            print("torch_bench: warning: non-finite loss %r" % loss.item(), file=sys.stderr)

    med = statistics.median(times)
    fields = [
        ("peer", "pytorch"),
        ("arch", args.arch),
        ("mode", args.mode),
        ("batch", batch),
        ("threads", args.threads),
    ]
    if train:
        fields.append(("optimizer", args.optimizer))
    fields += [
        ("size", args.size),
        ("iters", iters),
        ("latency_ms", "%.1f" % (med * 1e3)),
        ("min_ms", "%.1f" % (min(times) * 1e3)),
        ("throughput_ips", "%.1f" % (batch / med)),
        ("peak_rss_mb", "%.0f" % rss_mb()),
        ("base_rss_mb", "%.0f" % base_rss),
        ("torch", torch.__version__),
    ]
    print(" ".join("%s=%s" % kv for kv in fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
