"""The machine a performance table was measured on: CPU, cores, memory, load, library versions.

Read from /proc and psutil, so the table says itself where its figures come from;
the load average matters on a machine shared with other users' jobs.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    import lightning
    import torch

    memory = psutil.virtual_memory()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"
    return (f"- CPU: {cpu_model()}, {psutil.cpu_count(logical=False) or '?'} cores / {psutil.cpu_count()} threads "
            f"(this process may use {len(os.sched_getaffinity(0))})\n"
            f"- memory: {memory.total / 2**30:.1f} GiB ({memory.available / 2**30:.1f} GiB available at the start)\n"
            f"- accelerator: {accelerator}\n"
            f"- load average (1, 5, 15 min) at the start: {load}\n"
            f"- Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} intra-op threads), "
            f"Lightning {lightning.__version__}, {platform.system()} {platform.release()}\n")


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())
