#!/usr/bin/env python3
"""Write the PyTorch fixture of `stn import-torch`: the official tutorial's spatial transformer
network (https://pytorch.org/tutorials/intermediate/spatial_transformer_tutorial.html, its `Net`
layer for layer), trained briefly here on the embedded digits rotated at random so that its
transformer does something, saved as PyTorch users save it, and what PyTorch computes with it.

Made once and committed (crates/stn-models/tests/fixtures/torch/); CI has no PyTorch. Needs
torch, numpy and safetensors (tools/peer's setup plus `pip install safetensors`):

    python tools/torch/make_torch_fixture.py

Writes:
  tutorial.pt            torch.save(model.state_dict())  (the tutorial's own way)
  tutorial.safetensors   safetensors.torch.save_file(model.state_dict())
  checkpoint.pt          {"epoch": 1, "state_dict": ...}  (a training checkpoint)
  expected.json          inputs (raw 28 x 28 8-bit pixels, as v / 255), and PyTorch's theta, log-probs
                         and transformer output for them (the model normalizes its input with
                         the tutorial's mean 0.1307 and std 0.3081 first)
  bad_missing.safetensors   without fc_loc.2.bias
  bad_shape.safetensors     conv1.weight of the wrong shape
  bad_extra.safetensors     one tensor the model does not have
"""
import gzip
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "crates" / "stn-models" / "tests" / "fixtures" / "torch"
MNIST = REPO / "data" / "mnist10k"
MEAN, STD = 0.1307, 0.3081


class Net(nn.Module):
    """The tutorial's network, unchanged."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
        )
        self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))
        self.fc_loc[2].weight.data.zero_()
        self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    def stn(self, x):
        xs = self.localization(x)
        xs = xs.view(-1, 10 * 3 * 3)
        theta = self.fc_loc(xs).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False), theta

    def forward(self, x):
        x, theta = self.stn(x)
        warped = x
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1), theta, warped


def idx(name):
    data = gzip.open(MNIST / name).read()
    if data[2] == 8 and data[3] == 3:
        n, h, w = np.frombuffer(data[4:16], dtype=">u4")
        return np.frombuffer(data[16:], dtype=np.uint8).reshape(n, h, w)
    n = np.frombuffer(data[4:8], dtype=">u4")[0]
    return np.frombuffer(data[8:], dtype=np.uint8)[:n]


def rotate(x, gen):
    """Each digit turned by a random angle (+-60 degrees): something for the transformer to undo."""
    a = (torch.rand(x.shape[0], generator=gen) * 2 - 1) * (np.pi / 3)
    theta = torch.stack([torch.cos(a), -torch.sin(a), torch.zeros_like(a), torch.sin(a), torch.cos(a), torch.zeros_like(a)], 1)
    grid = F.affine_grid(theta.view(-1, 2, 3), x.size(), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def main():
    torch.manual_seed(2015)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(7)
    images = torch.from_numpy(idx("mnist10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0)[:, None]
    labels = torch.from_numpy(idx("mnist10k-labels-idx1-ubyte.gz").astype(np.int64))
    train_x, train_y = images[:8000], labels[:8000]
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for epoch in range(4):
        order = torch.randperm(8000, generator=gen)
        for i in range(0, 8000, 64):
            b = order[i : i + 64]
            x = (rotate(train_x[b], gen) - MEAN) / STD
            opt.zero_grad()
            loss = F.nll_loss(model(x)[0], train_y[b])
            loss.backward()
            opt.step()
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    torch.save(state, OUT / "tutorial.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, OUT / "tutorial.safetensors")
    torch.save({"epoch": 4, "state_dict": state}, OUT / "checkpoint.pt")
    bad = dict(state)
    del bad["fc_loc.2.bias"]
    save_file({k: v.contiguous() for k, v in bad.items()}, OUT / "bad_missing.safetensors")
    bad = dict(state)
    bad["conv1.weight"] = torch.zeros(10, 1, 3, 3)
    save_file({k: v.contiguous() for k, v in bad.items()}, OUT / "bad_shape.safetensors")
    bad = dict(state)
    bad["fc3.weight"] = torch.zeros(10, 10)
    save_file({k: v.contiguous() for k, v in bad.items()}, OUT / "bad_extra.safetensors")

    # Test digits, rotated: raw pixels in, what PyTorch computes out.
    test_x = rotate(images[8000:8008], torch.Generator().manual_seed(11))
    # 8-bit pixels, so that an image table can hold exactly these inputs.
    test_x = torch.round(test_x.clamp(0, 1) * 255) / 255
    with torch.no_grad():
        log_probs, theta, warped = model((test_x - MEAN) / STD)
        accuracy = float((model((rotate(images[8000:], torch.Generator().manual_seed(12)) - MEAN) / STD)[0].argmax(1) == labels[8000:]).float().mean())
    expected = {
        "generator": "tools/torch/make_torch_fixture.py",
        "torch": torch.__version__,
        "normalize": [MEAN, STD],
        "shape": [8, 1, 28, 28],
        "inputs": test_x.flatten().tolist(),
        "labels": labels[8000:8008].tolist(),
        "theta": theta.flatten().tolist(),
        "log_probs": log_probs.flatten().tolist(),
        "warped": warped.flatten().tolist(),
        "test_accuracy_rotated": accuracy,
    }
    (OUT / "expected.json").write_text(json.dumps(expected) + "\n")
    print(f"wrote {OUT}; test accuracy on rotated digits {accuracy:.4f}; theta[0] {theta[0].flatten().tolist()}")


if __name__ == "__main__":
    main()
