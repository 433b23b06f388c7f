"""Checking a requested torch device before any trial starts or anything is written, and the CPU
thread policy of a trial process."""
from __future__ import annotations

import torch

from automl.errors import DeviceError


def check_device(device: "str | torch.device | None") -> None:
    """Refuse a device that can't run here: unknown names, CUDA/MPS without the hardware, a GPU
    index past the last GPU. ``None`` (automatic: CUDA when available, else CPU) is always fine."""
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise DeviceError(f"device {device!r} is not a torch device ({' '.join(str(e).split())[:120]}); "
                          f"use cpu, cuda, cuda:N or mps, or leave --device out.") from None
    if parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(device)!r} needs CUDA, which is not available here (torch "
                              f"{torch.__version__}); use --device cpu or leave --device out.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise DeviceError(f"device {str(device)!r} does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}.")
        return
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {str(device)!r} needs Apple MPS, which is not available here; use --device cpu.")
        return
    raise DeviceError(f"device {str(device)!r} is not supported; use cpu, cuda, cuda:N or mps.")


def set_cpu_threads(threads: int | None) -> int:
    """The thread policy: ``threads`` torch CPU threads in this process (``None`` or 0: torch's
    default, every core). The CLI gives each trial process one thread unless told: two workers
    with torch's default threads on two cores spin against each other (5 against 175 trials a
    minute, measured); on a GPU the thread count barely matters. Returns the count in force."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise DeviceError(f"threads must be a non-negative integer (0: torch's default), got {threads!r}.")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
