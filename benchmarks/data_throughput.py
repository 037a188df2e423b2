"""Images/s of the data path alone: device-resident batches (DeviceBatches: one index per batch into tensors on the
device) vs the seed's per-sample pipeline (torchvision MNIST, PIL -> ToTensor -> Normalize per image, DataLoader),
and the package's DataLoader over a TensorDataset in between. Alternating rounds, medians, ratios.
Writes benchmarks/results/data_throughput.json.

    python benchmarks/data_throughput.py [--rounds 5] [--device cpu]
"""
import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import load_average, median, pil_loader, write_json
from from_noise_to_images.core import get_device, mnist_tensors
from from_noise_to_images.fast import DeviceBatches, synchronize


def rate(batches, device, max_batches, batch_size):
    synchronize(device); t0 = time.perf_counter(); k = 0
    for x, _ in batches:
        x = x.to(device, non_blocking=True); k += 1
        if k >= max_batches: break
    x.sum().item() if device.type == "cuda" else None   # the batches really exist
    synchronize(device)
    return k * batch_size / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--pil-batches", type=int, default=20, help="batches timed for the per-sample pipeline (default 20)")
    p.add_argument("--device", default=None)
    a = p.parse_args()
    device = torch.device(a.device) if a.device else get_device()
    load_start = load_average()
    x, y = mnist_tensors(train=True)
    pil = pil_loader(a.batch_size)
    tensor_loader = DataLoader(TensorDataset(x, y), batch_size=a.batch_size, shuffle=True, drop_last=True)
    dev = DeviceBatches(x, y, batch_size=a.batch_size, seed=0, device=device)
    full = len(dev)
    res = dict(per_sample_pil=[], tensor_dataloader=[], device_batches=[])
    for r in range(a.rounds):
        res["per_sample_pil"].append(rate(pil, device, a.pil_batches, a.batch_size))
        res["tensor_dataloader"].append(rate(tensor_loader, device, 100, a.batch_size))
        res["device_batches"].append(rate(dev, device, full, a.batch_size))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in res.items()))
    med = {k: median(v) for k, v in res.items()}
    record = dict(benchmark="data_throughput", device=str(device), batch_size=a.batch_size, rounds=a.rounds,
                  images_per_s=res, median_images_per_s=med,
                  device_batches_vs_per_sample_pil=med["device_batches"] / med["per_sample_pil"],
                  device_batches_vs_tensor_dataloader=med["device_batches"] / med["tensor_dataloader"],
                  per_sample_pil_ms_per_image=1000 / med["per_sample_pil"],
                  timed=dict(per_sample_pil=f"{a.pil_batches} batches", tensor_dataloader="100 batches",
                             device_batches=f"a full epoch ({full} batches)"),
                  load_average_start=load_start, load_average_end=load_average())
    print(f"device batches {med['device_batches']:,.0f} img/s = {record['device_batches_vs_per_sample_pil']:,.0f}x the per-sample "
          f"pipeline ({med['per_sample_pil']:,.0f} img/s), {record['device_batches_vs_tensor_dataloader']:,.1f}x a TensorDataset DataLoader")
    write_json("data_throughput" + ("_" + device.type if device.type != "cpu" else ""), record)


if __name__ == "__main__": main()
