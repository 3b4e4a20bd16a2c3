"""Telemetry beside the load: the server's own Prometheus metrics (:mod:`.prometheus`) and the GPUs'
power and energy through NVML (:mod:`.nvml`). Neither imports an engine; NVML is imported only inside
the sampler's functions (the ``gpu`` extra)."""
