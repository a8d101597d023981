"""Small helpers the benchmark prints with: percentiles, ratios, wrk output, process memory."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of durations given in seconds."""
    if not values_s:
        return {"n": 0}
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50": round(percentile(ms, 50), 2), "p95": round(percentile(ms, 95), 2),
            "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2)}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


# wrk's Lua hooks. done(): wrk itself prints only 50/75/90/99, the goals need p95 too. delay(): with
# GEDGE_WRK_THINK_MS set, each connection is a client that waits a random think time (exponential, that mean)
# after each answer before it asks again, as people and pollers do; unset, it asks again at once (closed loop).
WRK_SCRIPT = """
local think = tonumber(os.getenv("GEDGE_WRK_THINK_MS") or "")
if think then
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + math.floor((tonumber(tostring({}):match("0x(%x+)"), 16)
    or 0) % 100000))
  delay = function()
    return math.floor(-think * math.log(1 - math.random()))
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d errors=%d duration_us=%d\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration))
  io.write(string.format("BENCH detail connect=%d read=%d write=%d status=%d timeout=%d\\n",
    e.connect, e.read, e.write, e.status, e.timeout))
  for _, p in ipairs({50, 95, 99}) do
    io.write(string.format("BENCH p%d_us=%d\\n", p, latency:percentile(p)))
  end
  io.write(string.format("BENCH max_us=%d\\n", latency.max))
end
"""


def parse_wrk(output: str) -> dict[str, float]:
    """The BENCH lines the WRK_SCRIPT hook writes -> {"rps", "errors", "p50", "p95", "p99", "max"} (ms)."""
    values = dict(re.findall(r"^BENCH (p50|p95|p99|max)_us=(\d+)", output, re.M))
    head = re.search(r"^BENCH requests=(\d+) errors=(\d+) duration_us=(\d+)", output, re.M)
    if head is None:
        raise ValueError("no wrk summary in output:\n" + output[-2000:])
    requests, errors, duration_us = (int(v) for v in head.groups())
    result: dict = {"requests": requests, "errors": errors, "rps": round(requests / (duration_us / 1e6), 1)}
    kinds = re.search(r"^BENCH detail (.*)$", output, re.M)
    if kinds and errors:
        result["error_kinds"] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", kinds.group(1)) if int(v)}
    for key in ("p50", "p95", "p99", "max"):
        result[key] = round(int(values[key]) / 1000, 2)
    return result


def descendants(pid: int) -> list[int]:
    """pid and every process below it (read from /proc; Linux only)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: the fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def memory_mb(pid: int) -> dict[str, float]:
    """Peak (VmHWM) and current (VmRSS) resident memory of one process, in MB."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) / 1024
    except OSError:
        return {}
    return {"peak_mb": round(fields.get("VmHWM", 0), 1), "rss_mb": round(fields.get("VmRSS", 0), 1)}


def tree_peak_mb(pid: int) -> float:
    """The largest peak RSS among a process and its children (Dramatiq forks its worker processes)."""
    return max((memory_mb(p).get("peak_mb", 0.0) for p in descendants(pid)), default=0.0)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
