"""Multi-process runs: ``torchrun --nproc-per-node N -m evalkit run ...`` or
``accelerate launch --multi_gpu --num_processes N -m evalkit run ...``.

Both launchers set ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; each process computes on its own GPU
(``cuda:$LOCAL_RANK``, :func:`evalkit.placement.resolve_device`) and :func:`state` brings up accelerate's
``PartialState`` (NCCL on GPUs, gloo on the CPU). The runner gives batch *c* to process ``c mod N`` (whole
batches, so every image is made in the same batch as in a single-process run), gathers the rows on
process 0, which writes the run folder. Without those variables nothing here is imported or started.
"""

from __future__ import annotations

import os
from typing import Any


def world() -> tuple[int, int]:
    """(this process's rank, number of processes) from the launcher's environment; (0, 1) when not launched."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


#: the run's device (:func:`configure`): NCCL between processes on GPUs, gloo on the CPU
_DEVICE = {"type": None}


def configure(device: str) -> None:
    """Say where this process computes (``evalkit run --device``, resolved per LOCAL_RANK), before the process
    group starts: its GPU becomes the current CUDA device and the group uses NCCL; on the CPU, gloo."""
    _DEVICE["type"] = str(device).split(":")[0]
    if _DEVICE["type"] == "cuda":
        import torch

        torch.cuda.set_device(torch.device(device))


def state():
    """accelerate's process state (initialises the process group once)."""
    import torch
    from accelerate import PartialState

    on_cpu = _DEVICE["type"] != "cuda" if _DEVICE["type"] is not None else not torch.cuda.is_available()
    return PartialState(cpu=on_cpu)


def broadcast(value: Any) -> Any:
    """``value`` of process 0, on every process."""
    if world()[1] == 1:
        return value
    from accelerate.utils import broadcast_object_list

    state()
    return broadcast_object_list([value], from_process=0)[0]


def gather(values: list) -> list:
    """The concatenation of every process's ``values`` (on every process)."""
    if world()[1] == 1:
        return values
    from accelerate.utils import gather_object

    state()
    return gather_object(values)


def finish() -> None:
    """Wait for every process, then close the process group (a process that exits with it open can abort)."""
    if world()[1] == 1:
        return
    import torch.distributed as dist

    state().wait_for_everyone()
    if dist.is_initialized():
        dist.destroy_process_group()
