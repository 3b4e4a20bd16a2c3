"""Device-to-device copy bandwidth (bytes read + bytes written), the batch-1 decode floor's denominator.

Prints JSON: the median over 20 timed copies of a 4 GiB buffer, after 3 warm-ups, timed with CUDA
events. Random data, not zeros (zeros can run faster than real data).
"""

import json
import statistics

import torch

n_bytes = 4 * 2**30
src = torch.randint(0, 255, (n_bytes,), dtype=torch.uint8, device="cuda")
dst = torch.empty_like(src)
for _ in range(3):
    dst.copy_(src)
times = []
for _ in range(20):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    times.append(start.elapsed_time(end) / 1000.0)
assert torch.equal(dst[:: 2**20], src[:: 2**20])
t = statistics.median(times)
print(json.dumps({"device": torch.cuda.get_device_name(0), "bytes_moved": 2 * n_bytes, "median_s": t,
                  "bandwidth_bytes_per_s": 2 * n_bytes / t, "spread_s": [min(times), max(times)]}))
