"""
Where one training iteration's time went, from the trace that `train_deepspeed.py --profile_iteration=N` writes
(out_dir/profile/rank_<r>.json.gz; https://ui.perfetto.dev shows it as a timeline): for each phase (forward,
backward, optimizer step) its host time and the GPU time of the kernels it launched, GPU kernel time by kind, how
much of the communication (NCCL) ran with no compute kernel beside it (exposed), and the GPU's idle time. The
profiler slows the host, so host times are upper bounds.

    python bench/trace_summary.py out_dir/profile/rank_0.json.gz
"""
import bisect
import collections
import gzip
import json
import sys

PHASES = ("forward", "backward", "optimizer step")
# first match wins: communication before "reduce", attention before matmul ("sm90" is in both kinds of names)
COMMUNICATION = "communication (NCCL)"
KINDS = [(COMMUNICATION, ("nccl",)),
         ("attention", ("flash", "fmha", "cudnn", "attn", "sdpa")),
         ("matmul", ("gemm", "nvjet", "sm90", "cutlass", "xmma", "cublas", "splitk")),
         ("optimizer (AdamW)", ("adam",)),
         ("loss head (softmax/exp/logsumexp)", ("logsumexp", "exp_", "softmax", "scatter", "gather")),
         ("layernorm", ("layer_norm", "layernorm", "add_ln_", "sum_partials")),  # the last two: fused_norm.py
         ("gelu", ("gelu",)),
         ("fused by inductor", ("triton",)),
         ("memory copies and fills", ("memcpy", "memset"))]


def kind_of(name):
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other elementwise / reductions / copies"


def merge(spans):
    """The union of (start, end) intervals as sorted, disjoint intervals."""
    out = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def length(merged):
    return sum(end - start for start, end in merged)


def minus(a, b):
    """Merged intervals a with merged intervals b cut out."""
    out, j = [], 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k, cur = j, start
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cur:
                out.append([cur, b[k][0]])
            cur = max(cur, b[k][1])
            k += 1
        if cur < end:
            out.append([cur, end])
    return out


def idle_gaps(spans):
    """(gap, offset from the first kernel, kernel before, kernel after) for every stretch with no kernel running;
    spans are (start, end, name)."""
    spans = sorted(spans)
    gaps, reach, before = [], spans[0][1], spans[0][2]
    for start, end, name in spans[1:]:
        if start > reach:
            gaps.append((start - reach, start - spans[0][0], before, name))
        if end > reach:
            reach, before = end, name
    return gaps


def print_idle_gaps(spans, what, top=15):
    """spans in microseconds."""
    if not spans:
        print("no GPU kernels in the trace")
        return
    gaps = idle_gaps(spans)
    window = (max(s[1] for s in spans) - min(s[0] for s in spans)) / 1000
    idle = sum(g[0] for g in gaps) / 1000
    small = sum(g[0] for g in gaps if g[0] < 20) / 1000
    print(f"GPU idle between kernels over {what}: {idle:.1f} ms of {window:.1f} ms ({len(gaps)} gaps; "
          f"{small:.1f} ms in gaps under 20 us)")
    for gap, at, prev, nxt in sorted(gaps, reverse=True)[:top]:
        print(f"  {gap / 1000:7.3f} ms at {at / 1000:7.1f} ms: after {prev[:60]} | before {nxt[:60]}")


def load(path):
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        return [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]


def spans(events):
    return merge((e["ts"], e["ts"] + e["dur"]) for e in events)


def kernels_by_window(events, kernels):
    """[(phase name, host ms, [kernels launched in it])] for each record_function range of a phase, in order;
    kernels are matched to their launch through the profiler's correlation ids (backward's kernels are launched by
    autograd's own thread while the main thread waits inside "backward")."""
    launches = {e["args"]["correlation"]: e["ts"] for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    windows = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                     if e.get("cat") == "user_annotation" and e["name"] in PHASES)
    starts = [w[0] for w in windows]
    launched = [[] for _ in windows]
    for k in kernels:
        t = launches.get(k.get("args", {}).get("correlation"))
        i = bisect.bisect_right(starts, t) - 1 if t is not None else -1
        if i >= 0 and t <= windows[i][1]:
            launched[i].append(k)
    return [(name, (end - start) / 1000, ks) for (start, end, name), ks in zip(windows, launched)]


def summarise(events):
    """The numbers this script prints, in milliseconds."""
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    phases = {}
    for name, host_ms, ks in kernels_by_window(events, kernels):
        span = (max(k["ts"] + k["dur"] for k in ks) - min(k["ts"] for k in ks)) / 1000 if ks else 0.0
        count, host, gpu, spanned = phases.get(name, (0, 0.0, 0.0, 0.0))
        phases[name] = (count + 1, host + host_ms, gpu + sum(k["dur"] for k in ks) / 1000, spanned + span)
    kinds = [kind_of(e["name"]) for e in kernels]
    by_kind = collections.Counter()
    for e, kind in zip(kernels, kinds):
        by_kind[kind] += e["dur"] / 1000
    comm = [e for e, kind in zip(kernels, kinds) if kind == COMMUNICATION]
    busy, compute = spans(kernels), spans(e for e, kind in zip(kernels, kinds) if kind != COMMUNICATION)
    window = (max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)) / 1000 if kernels else 0.0
    return {"phases": phases, "by_kind": by_kind, "window_ms": window, "busy_ms": length(busy) / 1000,
            "compute_ms": length(compute) / 1000, "comm_ms": length(spans(comm)) / 1000,
            "exposed_comm_ms": length(minus(spans(comm), compute)) / 1000,
            "spans": [(e["ts"], e["ts"] + e["dur"], e["name"]) for e in kernels]}


def report(s):
    on_gpu = bool(s["by_kind"])
    print("phases: host time inside each" + ("; GPU time of the kernels launched in it (streams added), first to last"
                                             if on_gpu else " (no GPU kernels in the trace: a CPU run)"))
    for name in PHASES:
        if name in s["phases"]:
            count, cpu_ms, gpu_ms, span_ms = s["phases"][name]
            gpu = f", GPU kernels {gpu_ms:8.1f} ms over {span_ms:8.1f} ms" if on_gpu else ""
            print(f"  {name:16} {count} x, host {cpu_ms:8.1f} ms{gpu}")
    if not on_gpu:
        return
    print(f"GPU: {s['window_ms']:.1f} ms from the first kernel to the last; kernels running {s['busy_ms']:.1f} ms, "
          f"compute kernels {s['compute_ms']:.1f} ms; communication {s['comm_ms']:.1f} ms, of which "
          f"{s['exposed_comm_ms']:.1f} ms with no compute kernel beside it")
    total = sum(s["by_kind"].values())
    print(f"kernel time by kind ({total:.1f} ms, overlapping streams counted twice):")
    for kind, ms in s["by_kind"].most_common():
        print(f"  {kind:42} {ms:9.1f} ms  {ms / total:6.1%}")
    print_idle_gaps(s["spans"], "the iteration")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    report(summarise(load(sys.argv[1])))
