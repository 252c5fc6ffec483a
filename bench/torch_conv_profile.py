"""PyTorch's time for a training step's three conv products on each of ResNet-50's conv shapes
at batch 8 (forward, input gradient, weight gradient), the fastest of several calls, with the
same labels as the project's `conv_train_profile` test prints:

    python3 bench/torch_conv_profile.py --threads 2
"""

import argparse
import time

import torch
import torch.nn.functional as F

# (in channels, out channels, input side, kernel, stride, uses per network): ResNet-50 with the
# stride on the 3x3 (mmdet's `pytorch` style), as in conv_profile.rs.
CONVS = [
    (3, 64, 224, 7, 2, 1),
    (64, 64, 56, 1, 1, 1),
    (64, 64, 56, 3, 1, 3),
    (64, 256, 56, 1, 1, 4),
    (128, 128, 56, 3, 2, 1),
    (256, 64, 56, 1, 1, 2),
    (256, 128, 56, 1, 1, 1),
    (256, 512, 56, 1, 2, 1),
    (128, 128, 28, 3, 1, 3),
    (128, 512, 28, 1, 1, 4),
    (256, 256, 28, 3, 2, 1),
    (512, 128, 28, 1, 1, 3),
    (512, 256, 28, 1, 1, 1),
    (512, 1024, 28, 1, 2, 1),
    (256, 256, 14, 3, 1, 5),
    (256, 1024, 14, 1, 1, 6),
    (512, 512, 14, 3, 2, 1),
    (1024, 256, 14, 1, 1, 5),
    (1024, 512, 14, 1, 1, 1),
    (1024, 2048, 14, 1, 2, 1),
    (512, 512, 7, 3, 1, 2),
    (512, 2048, 7, 1, 1, 3),
    (2048, 512, 7, 1, 1, 2),
]


def fastest(runs, f):
    f()
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    totals = [0.0, 0.0, 0.0]
    rows = []
    with torch.no_grad():
        for index, (cin, cout, side, k, stride, uses) in enumerate(CONVS):
            x = torch.randn(args.batch, cin, side, side)
            w = torch.randn(cout, cin, k, k)
            pad = k // 2
            y = F.conv2d(x, w, None, stride, pad)
            dy = torch.randn_like(y)

            def backward(mask):
                return lambda: torch.ops.aten.convolution_backward(
                    dy, x, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1, mask
                )

            times = [
                fastest(args.runs, lambda: F.conv2d(x, w, None, stride, pad)),
                0.0 if index == 0 else fastest(args.runs, backward([True, False, False])),
                fastest(args.runs, backward([False, True, False])),
            ]
            for i, t in enumerate(times):
                totals[i] += t * uses
            flop = 2.0 * y.numel() * cin * k * k
            label = f"{k}x{k}" + (f"/{stride}" if stride > 1 else "") + f" {cin}>{cout} @{side}"
            rows.append((label, uses, times, flop))
    print(
        f"batch {args.batch}: per step forward {totals[0]:.1f} ms, input grad {totals[1]:.1f}, "
        f"weight grad {totals[2]:.1f}, all {sum(totals):.1f}"
    )
    for label, uses, times, flop in rows:
        cells = "".join(
            f"  {t:8.3f} ms {flop / t / 1e6 if t else 0.0:6.1f} GF/s" for t in times
        )
        print(f"  {label:<20} x{uses}{cells}")


if __name__ == "__main__":
    main()
