#!/usr/bin/env python3
"""PyTorch reference for `stn bench`'s model figures: the STN tutorial's ST-CNN and the same
classifier without the transformer (plain CNN), 28x28, batch 64, random data, SGD lr 0.01, NLL,
2 threads; median ms per training step and per inference batch. Gives PyTorch's own
transformer cost (ST-CNN step / CNN step) in the same run.

Run: python tools/peer/bench_cnn.py [--steps 50] [--threads 2] [--json]
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, with_stn):
        super().__init__()
        self.with_stn = with_stn
        if with_stn:
            self.localization = nn.Sequential(
                nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
                nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True))
            self.fc_loc = nn.Sequential(nn.Linear(90, 32), nn.ReLU(True), nn.Linear(32, 6))
            self.fc_loc[2].weight.data.zero_()
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        if self.with_stn:
            theta = self.fc_loc(self.localization(x).flatten(1)).view(-1, 2, 3)
            grid = F.affine_grid(theta, x.size(), align_corners=False)
            x = F.grid_sample(x, grid, align_corners=False)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def median_ms(fn, steps, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def bench(with_stn, args):
    torch.manual_seed(0)
    model = Net(with_stn)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = [(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))) for _ in range(8)]
    it = [0]

    def step():
        x, y = batches[it[0] % len(batches)]
        it[0] += 1
        opt.zero_grad(set_to_none=True)
        F.nll_loss(model(x), y).backward()
        opt.step()

    model.train()
    train = median_ms(step, args.steps, args.warmup)
    model.eval()
    with torch.no_grad():
        infer = median_ms(lambda: model(batches[0][0]), args.steps, args.warmup)
    return train, infer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    st_train, st_infer = bench(True, args)
    cnn_train, cnn_infer = bench(False, args)
    r = {"torch": torch.__version__, "threads": args.threads,
         "stcnn_train_ms": st_train, "stcnn_infer_ms": st_infer,
         "cnn_train_ms": cnn_train, "cnn_infer_ms": cnn_infer,
         "st_cost_train": st_train / cnn_train - 1, "st_cost_infer": st_infer / cnn_infer - 1}
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        for k, v in r.items():
            print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
