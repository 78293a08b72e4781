"""What the demo's models do when they let their weights go: on a CUDA device, collect
the dropped tensors and hand the freed memory back to the device, so the next model
(or another process) can have it. Nothing to do on the CPU."""

from __future__ import annotations


def free_device_memory(device: str) -> None:
    if not device.startswith("cuda"):
        return
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()
