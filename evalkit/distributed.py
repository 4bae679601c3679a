"""Multi-process runs: ``torchrun --nproc-per-node N -m evalkit run ...`` or ``accelerate launch --multi_gpu --num_processes N -m evalkit run ...``.

Both launchers set ``RANK`` / ``WORLD_SIZE``; then :func:`state` brings up accelerate's
``PartialState`` (gloo on CPU, NCCL on GPUs). The runner gives batch *c* to process ``c mod N`` (whole
batches, so every image is made in the same batch as in a single-process run), gathers the rows on
process 0, which writes the run folder. Without those variables nothing here is imported or started.
"""

from __future__ import annotations

import os
from typing import Any


def world() -> tuple[int, int]:
    """(this process's rank, number of processes) from the launcher's environment; (0, 1) when not launched."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def state():
    """accelerate's process state (initialises the process group once)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


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
