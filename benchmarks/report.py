"""The report: targets beside measurements, a JSON file with every figure, and a Markdown rendering."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from digitspot.edge.atomic_write import write_bytes_atomic, write_json_atomic


@dataclass(frozen=True)
class Thresholds:
    """The targets. ``x86_*`` ones are stated for the 2-core x86 dev machine and gate only there."""

    inference_p99_ms: float = 15.0  # the general gate (a Pi)
    # Per-call median on x86, as the median of the interleaved blocks' medians: the p99 of one model
    # spreads by +-15% between runs on a shared machine, so a gate on it would pass or fail by chance.
    x86_inference_median_ms: float = 1.0
    e2e_p50_ms: float = 100.0
    e2e_p95_ms: float = 150.0
    accuracy: float = 0.975
    x86_real_time_factor: float = 0.005
    peak_rss_mb: float = 100.0
    x86_idle_cpu_percent: float = 2.0
    peer_speed_ratio: float = 10.0


def dig(data: Any, *keys: Any, default: Any = None) -> Any:
    for key in keys:
        if isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return default
    return default if data is None else data


def evaluate_targets(report: dict[str, Any], t: Thresholds, x86: bool) -> list[dict[str, Any]]:
    """Each target: measured value (None if not measured), threshold, pass, and whether it gates the exit."""
    rows: list[dict[str, Any]] = []

    def add(key, text, measured, op, threshold, unit, *, gated=True, spread=None, skipped=None):
        if measured is None:
            ok = None
        else:
            ok = measured <= threshold if op == "<=" else measured >= threshold if op == ">=" else measured > threshold
        rows.append({"id": key, "target": text, "op": op, "threshold": threshold, "unit": unit,
                     "measured": measured, "spread": spread, "passed": ok, "gated": gated,
                     "skipped": skipped})

    int8 = dig(report, "inference", "runtimes", "int8", "latency_ms", default={})
    add("inference_p99", "INT8 inference p99 (1 s window, 1 thread)", int8.get("p99"), "<=",
        t.inference_p99_ms, "ms", spread=_spread(int8))
    blocks = dig(report, "inference", "runtimes", "int8", "block_median_ms", default={})
    add("inference_median_x86", "INT8 inference median per call on the 2-core x86 dev machine (median of "
        "the interleaved blocks' medians)", blocks.get("value"), "<=", t.x86_inference_median_ms, "ms",
        gated=x86, spread=_block_spread(blocks, int8))
    lat = dig(report, "e2e", "latency_ms", default={})
    add("e2e_p50", "End of speech -> subscriber p50", lat.get("p50"), "<=", t.e2e_p50_ms, "ms",
        spread=_ci(lat, "p50_ci95"))
    add("e2e_p95", "End of speech -> subscriber p95", lat.get("p95"), "<=", t.e2e_p95_ms, "ms",
        spread=_ci(lat, "p95_ci95"))
    acc = dig(report, "accuracy", "conditions", "official", "accuracy", default={})
    add("accuracy_official", "Accuracy, FSDD official test takes (digitspot-edge classify)",
        _pct(acc.get("value")), ">=", t.accuracy * 100, "%", spread=_wilson(acc))
    e2e_acc = dig(report, "e2e", "accuracy", default={})
    add("accuracy_e2e", "Correct digits on the end-to-end stream (daemon, noise, gaps)",
        _pct(e2e_acc.get("value")), ">=", t.accuracy * 100, "%", spread=_wilson(e2e_acc))
    thr = dig(report, "throughput", "speech_hour", default={})
    add("rtf_x86", "Real-time factor, an hour of speech+noise as fast as possible (x86 dev machine)",
        thr.get("real_time_factor"), "<=", t.x86_real_time_factor, "", gated=x86,
        spread=(f"{thr['wall_s']:.1f} s wall for {thr['audio_seconds'] / 60:.0f} min of audio, start-up "
                f"included; {thr['cpu_s_per_audio_hour']:.1f} CPU s per audio hour") if thr else None)
    rss = [v for v in (thr.get("peak_rss_mb"), dig(report, "throughput", "idle", "peak_rss_mb"),
                       dig(report, "throughput", "noise_hour", "peak_rss_mb"),
                       dig(report, "e2e", "daemon_peak_rss_mb")) if v is not None]
    add("peak_rss", "Daemon peak RSS", max(rss) if rss else None, "<=", t.peak_rss_mb, "MB",
        spread=f"VmHWM, highest of {len(rss)} daemon runs (min {min(rss):.1f})" if rss else None)
    idle = dig(report, "throughput", "idle", default={})
    add("idle_cpu_x86", "Daemon CPU listening to speech-free audio in real time (% of one core)",
        idle.get("cpu_percent_of_one_core"), "<=", t.x86_idle_cpu_percent, "%", gated=x86,
        spread=(f"{idle['cpu_s']:.2f} CPU s over {idle['window_s']:.0f} s (10 ms ticks); hour extrapolated"
                if idle else None))
    peer = report.get("peer") or {}
    skipped = peer.get("skipped")
    utt = peer.get("utterances") or {}
    ours_ms, peer_ms = dig(utt, "ours", "decode_ms", "p50"), dig(utt, "pocketsphinx", "decode_ms", "p50")
    add("peer_speed", "Ours faster per utterance than PocketSphinx (ratio of medians)",
        utt.get("speed_ratio_p50"), ">=", t.peer_speed_ratio, "x", skipped=skipped, gated=not skipped,
        spread=f"ours {ours_ms:.3f} ms, PocketSphinx {peer_ms:.3f} ms (p50)" if ours_ms and peer_ms else None)
    ours_acc, peer_acc = dig(utt, "ours", "accuracy", "value"), dig(utt, "pocketsphinx", "accuracy", "value")
    diff = None if ours_acc is None or peer_acc is None else (ours_acc - peer_acc) * 100
    add("peer_accuracy", "Ours more accurate than PocketSphinx on the FSDD test takes (difference)",
        diff, ">", 0.0, "points", skipped=skipped, gated=not skipped,
        spread=f"ours {_pct(ours_acc):.1f}%, PocketSphinx {_pct(peer_acc):.1f}%" if diff is not None else None)
    return rows


def _pct(v):
    return None if v is None else v * 100


def _spread(s: dict) -> str | None:
    if not s or not s.get("n"):
        return None
    return f"p50 {s['p50']:.3f}, p90 {s['p90']:.3f}, max {s['max']:.3f}, n={s['n']}"


def _block_spread(blocks: dict, per_call: dict) -> str | None:
    if not blocks or not blocks.get("blocks"):
        return None
    tail = f"; per call p99 {per_call['p99']:.3f}, n={per_call['n']}" if per_call.get("n") else ""
    return (f"{blocks['blocks']} blocks of {blocks['block_size']} calls, block medians "
            f"{blocks['min']:.3f}-{blocks['max']:.3f}{tail}")


def _ci(s: dict, key: str) -> str | None:
    ci = s.get(key) if s else None
    return f"95% CI {ci[0]:.1f}-{ci[1]:.1f}, n={s['n']}" if ci else None


def _wilson(a: dict) -> str | None:
    ci = a.get("ci95") if a else None
    if not ci or ci[0] is None:
        return None
    return f"95% CI {ci[0] * 100:.1f}-{ci[1] * 100:.1f}%, {a['successes']}/{a['total']}"


def _fmt(v: Any, unit: str = "", digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if unit in ("%", "points", "x") and isinstance(v, (int, float)):
        digits = 1
    elif isinstance(v, float) and 0 < abs(v) < 0.01:
        digits = 5  # real-time factors
    if isinstance(v, float):
        text = f"{v:.{digits}f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    else:
        text = f"{v:,}" if isinstance(v, int) else str(v)
    return f"{text} {unit}".strip()


def verdict(rows: list[dict[str, Any]], errors: dict[str, str]) -> bool:
    gated = [r for r in rows if r["gated"]]
    return not errors and all(r["passed"] is True for r in gated)


# -- Markdown ------------------------------------------------------------------------------------

def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| Target | Threshold | Measured | Spread | Result |", "|---|---|---|---|---|"]
    for r in rows:
        if r["skipped"]:
            result = f"skipped ({r['skipped']})"
        elif r["passed"] is None:
            result = "**not measured**" + ("" if r["gated"] else " (not gated here)")
        elif r["passed"]:
            result = "pass" + ("" if r["gated"] else " (not gated here)")
        else:
            result = "**FAIL**" if r["gated"] else "miss (not gated on this machine)"
        lines.append(f"| {r['target']} | {r['op']} {_fmt(r['threshold'], r['unit'])} | "
                     f"{_fmt(r['measured'], r['unit'])} | {r['spread'] or ''} | {result} |")
    return lines


def _lat_row(label: str, s: dict) -> str:
    if not s or not s.get("n"):
        return f"| {label} | n/a | | | | | | |"
    return (f"| {label} | {s['p50']:.3f} | {s['p90']:.3f} | {s['p95']:.3f} | {s['p99']:.3f} | {s['max']:.3f} "
            f"| {s['mean']:.3f} ± {s['std']:.3f} | {s['n']} |")


LAT_HEADER = ["| | p50 | p90 | p95 | p99 | max | mean ± sd | n |", "|---|---|---|---|---|---|---|---|"]


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# digitspot benchmarks: {m['host']}, {report['date']}", ""]
    lines.append(f"**{'PASS' if report['passed'] else 'FAIL'}** ({report['mode']} mode): "
                 + ("every gated target met." if report["passed"] else "a gated target was missed or not measured.")
                 + f" Model `{report['model']['path']}` (sha256 {report['model']['sha256'][:12]}..., "
                   f"card `{report['model']['name']}`).")
    lines += ["", "## Machine", "",
              (f"- CPU: {m['cpu_model']} ({m['architecture']}), {m['logical_cores']} logical cores "
              f"({m['usable_cores']} usable), {m['memory_mb']} MB RAM"),
              f"- OS: {m['os']}, kernel {m['kernel']}; Python {m['python']}",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
              (f"- Load average at start {m['loadavg_at_start']}, at end {report.get('loadavg_at_end')}; whole "
               f"machine {dig(report, 'machine_busy', 'busy_percent', default='?')}% busy during the run "
               f"(steal {dig(report, 'machine_busy', 'steal_percent', default='?')}%)"),
              f"- Command: `{report['command']}`; total benchmark wall time {report['wall_s']:.0f} s", ""]
    lines += ["## Targets beside the measurements", ""] + targets_table(report["targets"])
    lines += ["", ("Targets marked \"x86 dev machine\" are stated for the 2-core x86 machine; they gate "
              "`make bench` only on x86_64. Exit code: 0 when every gated target passes, 1 otherwise."), ""]
    if report["errors"]:
        lines += ["## Errors", ""] + [f"- **{k}**: {v}" for k, v in report["errors"].items()] + [""]
    lines += _inference_md(report.get("inference"))
    lines += _e2e_md(report.get("e2e"))
    lines += _throughput_md(report.get("throughput"))
    lines += _peer_md(report.get("peer"))
    lines += _accuracy_md(report.get("accuracy"), dig(report, "model", "metrics_in_card", default={}))
    lines += ["## Caveats", ""] + [f"- {c}" for c in report["caveats"]] + [""]
    return "\n".join(lines) + "\n"


def _img(report: dict, key: str, alt: str) -> list[str]:
    name = report.get("figures", {}).get(key)
    return [f"![{alt}]({name})", ""] if name else []


def _inference_md(inf: dict | None) -> list[str]:
    if not inf:
        return []
    lines = ["## Inference latency (ms per 1-s window)", "",
             (f"{inf['runs']} timed runs after {inf['warmup']} warm-up runs, {inf['threads']} thread, real FSDD "
             "windows cycled; each call timed alone with perf_counter_ns; the runtimes take turns in blocks of "
             f"{inf.get('interleave_block', 100)} calls so that load from elsewhere hits them alike. The x86 "
             "gate is on the median of each runtime's block medians, which moves little between runs; the "
             "tail (p99, max) is the most sensitive to load from elsewhere."), ""] + LAT_HEADER
    for label, r in inf["runtimes"].items():
        if "skipped" in r:
            lines.append(f"| {label} | {r['skipped']} | | | | | | |")
        else:
            lines.append(_lat_row(label, r["latency_ms"]))
    blocks = [f"{label} {r['block_median_ms']['value']:.3f} ms ({r['block_median_ms']['blocks']} blocks, "
              f"{r['block_median_ms']['min']:.3f}-{r['block_median_ms']['max']:.3f})"
              for label, r in inf["runtimes"].items() if dig(r, "block_median_ms", "blocks")]
    if blocks:
        lines += ["", "Median of the blocks' medians: " + "; ".join(blocks) + "."]
    lines += ["", ("| model | file size | parameters (graph) | nonzero | sparsity | card params / nonzero | "
              "MACs per window (Conv/Gemm/MatMul) | STFT as direct DFT |"), "|---|---|---|---|---|---|---|---|"]
    for label, s in inf["models"].items():
        if "parameters" not in s:
            lines.append(f"| {label} | {s['file_size_bytes']:,} B | | | | | | |")
            continue
        lines.append(
            f"| {label} | {s['file_size_bytes']:,} B | {s['parameters']:,} | {_fmt(s['nonzero_parameters'])} | "
            f"{_fmt(s['sparsity'])} | {s['card_parameter_count']:,} / {s['card_nonzero_parameter_count']:,} | "
            f"{s['macs']:,} ({', '.join(f'{k} {v:,}' for k, v in s['macs_by_op'].items())}) | "
            f"{s['stft_direct_dft_macs']:,} |")
    lines += ["", ("Parameters (graph): elements of the Conv/Gemm weights and biases and BatchNorm scale/bias read from "
              "the ONNX file (BatchNorm after a conv is folded into it at export, hence fewer than the card's "
              "trainable count); front-end constants (mel filterbank, window) excluded. MACs: node shapes from an "
              "onnxruntime profiling run; Conv = output elements x C_in/groups x k_h x k_w, Gemm/MatMul = output "
              "elements x K. The STFT is listed apart as the equivalent direct DFT (onnxruntime uses an FFT)."), ""]
    return lines + _img_from(inf, "inference latency")


def _img_from(section: dict, alt: str) -> list[str]:
    name = section.get("figure")
    return [f"![{alt}]({name})", ""] if name else []


def _e2e_md(e: dict | None) -> list[str]:
    if not e:
        return []
    o = e["outcomes"]
    s = e["stream"]
    lines = ["## End to end: daemon -> Mosquitto -> subscriber", "",
             (f"Stream: {s['utterances']} words ({s['distinct_clips']} distinct FSDD test takes), gaps "
             f"{s['gap_s'][0]}-{s['gap_s'][1]} s, {s['noise']} noise at {s['snr_db']} dB SNR, speech at "
             f"{s['speech_level_dbfs']} dBFS RMS, {s['seconds']} s in real time; seed {s['seed']}."), "",
             "**How latency is measured.**", ""]
    lines += [f"- {item}" for item in e["latency_definition"]] + [""] + LAT_HEADER
    lines += [_lat_row("all detected words", e["latency_ms"]),
              _lat_row("correct words only", e["latency_correct_only_ms"]),
              _lat_row("daemon's own latency_ms field", e["daemon_reported_latency_ms"]),
              _lat_row("feeder lateness (scheduler jitter)", e["feed"]["writer_lateness_ms"]), ""]
    lines += [(f"{e.get('published_before_last_sample', 0)} words were published before their last (trimmed) "
               "sample had been fed (negative latency): the daemon may end a word early once it is confidently "
               "classified, before faint tails that the -35 dB trim keeps have arrived."), ""]
    ci50, ci95 = e["latency_ms"].get("p50_ci95"), e["latency_ms"].get("p95_ci95")
    if ci50 and ci95:
        lines += [f"Bootstrap 95% intervals: p50 {ci50[0]:.1f}-{ci50[1]:.1f} ms, p95 {ci95[0]:.1f}-{ci95[1]:.1f} ms.", ""]
    acc = e["accuracy"]
    fp = e["extra_per_hour_of_gaps"]
    lines += ["| correct | wrong | missed | extra (in a word's window) | extra (outside any word) | accuracy |",
              "|---|---|---|---|---|---|",
              (f"| {o['correct']} | {o['wrong']} | {o['missed']} | {o['extra'] - o['extra_unattributed']} | "
              f"{o['extra_unattributed']} | {_fmt(_pct(acc['value']), '%')} ({_wilson(acc)}) |"), "",
              "Errors (spoken->published): "
              + (", ".join(f"{k} x{v}" for k, v in e.get("errors_by_digit", {}).items()) or "none") + ".", "",
              (f"Detections outside any word window: {_fmt(fp['value'], digits=1)} per hour of gap audio "
               f"(95% CI {_fmt(fp['ci95'][0], digits=1)}-{_fmt(fp['ci95'][1], digits=1)}). "
               f"Matching: {e['matching_rule']}"), ""]
    config = dig(e, "daemon_info", "config", default={})
    if config:
        keys = ("vad_mode", "vad_frame_ms", "preroll_ms", "hangover_ms", "offset_ms", "early_confidence",
                "min_confidence", "min_segment_ms", "max_segment_ms", "onset_db", "offset_db", "threads")
        lines += ["Daemon settings (from its retained `info` message): "
                  + ", ".join(f"{k}={config[k]}" for k in keys if k in config) + ".", ""]
    return lines + _img_from(e, "end-to-end latency")


def _throughput_md(t: dict | None) -> list[str]:
    if not t:
        return []
    lines = ["## Throughput and footprint", ""]
    rows = [("| input (--source file, not real time) | audio | wall | real-time factor | CPU s | "
             "CPU s per audio hour | "
            "peak RSS | events |"), "|---|---|---|---|---|---|---|---|"]
    for key, label in (("speech_hour", "speech + noise"), ("noise_hour", "noise only (+ bursts)")):
        r = t.get(key)
        if r:
            rows.append(f"| {label} | {r['audio_seconds'] / 60:.1f} min | {r['wall_s']:.1f} s | "
                        f"{r['real_time_factor']:.5f} | {r['cpu_s']:.1f} | {r['cpu_s_per_audio_hour']:.1f} | "
                        f"{r['peak_rss_mb']:.1f} MB | {r['events']} ({r['words']} words) |")
    lines += rows + [""]
    nh = t.get("noise_hour")
    if nh:
        fp = nh["events_per_hour"]
        audio = nh.get("audio", {})
        lines += [(f"False triggers on speech-free audio: **{_fmt(fp['value'], digits=1)} per hour** "
                   f"({fp['events']} in {nh['audio_seconds'] / 3600:.2f} h; 95% CI {_fmt(fp['ci95'][0], digits=1)}-"
                   f"{_fmt(fp['ci95'][1], digits=1)}). Audio: the stream's {audio.get('noise', '')} noise bed "
                   f"({audio.get('noise_rms_dbfs', '?')} dBFS RMS) plus {audio.get('bursts', '?')} "
                   f"{audio.get('burst_description', '')}."), ""]
    st = t.get("startup")
    if st:
        lines += [(f"Start-up (spawn to retained `online`): {st['ready_s']:.2f} s, {st['cpu_s']:.2f} CPU s, "
                  f"peak RSS {st['peak_rss_mb']:.1f} MB. Real-time factors above include it."), ""]
    idle = t.get("idle")
    if idle:
        lines += [(f"Listening in real time to speech-free audio: **{idle['cpu_percent_of_one_core']:.2f}% of one "
                  f"core** ({idle['cpu_s']:.2f} CPU s over {idle['window_s']:.0f} s, /proc tick "
                  f"{idle['cpu_tick_s'] * 1000:.0f} ms; {idle['cpu_s_per_hour_extrapolated']:.0f} CPU s per hour "
                  f"extrapolated), RSS {_fmt(idle['rss_mb_at_end'], 'MB', 1)}, {idle['false_triggers']} digits "
                  f"published. {idle['note']}."), ""]
    return lines


def _peer_md(p: dict | None) -> list[str]:
    if not p:
        return []
    if p.get("skipped"):
        return ["## Peer: PocketSphinx", "", f"Skipped: {p['skipped']}", ""]
    u = p["utterances"]
    lines = ["## Peer: PocketSphinx with a digit grammar, on the same audio", "", p["method"], "",
             "| per utterance | accuracy | decode p50 | p90 | p99 | mean ± sd |", "|---|---|---|---|---|---|"]
    ps = u["pocketsphinx"]
    rows = [("digitspot INT8 (classify)", u["ours"])]
    rows += [(f"PocketSphinx + JSGF, {k} take", ps[k]) for k in ("plain", "padded") if k in ps] or [
        ("PocketSphinx + JSGF", ps)]
    for label, r in rows:
        s = r["decode_ms"]
        lines.append(f"| {label} | {_fmt(_pct(r['accuracy']['value']), '%')} ({_wilson(r['accuracy'])}) | "
                     f"{s['p50']:.3f} ms | {s['p90']:.3f} ms | {s['p99']:.3f} ms | {s['mean']:.3f} ± {s['std']:.3f} ms |")
    pw = u["pairwise"]
    lines += ["", (f"Ratios (PocketSphinx's {ps.get('decode_from', '')} decode time against ours; its "
              f"{ps.get('accuracy_from', '')} accuracy): **{u['speed_ratio_p50']:.1f}x** (medians), "
              f"{u['speed_ratio_mean']:.1f}x (means)"
              + (f"; against the padded decode {ps['padded']['decode_ms']['p50'] / u['ours']['decode_ms']['p50']:.1f}x"
                 if "padded" in ps else "")
              + f"; accuracy difference {u['accuracy_difference'] * 100:+.1f} "
              f"points (both right {pw['both_right']}, only ours {pw['only_ours_right']}, only PocketSphinx "
              f"{pw['only_peer_right']})."), ""]
    s = p.get("stream")
    if s:
        o = s["counts"]
        lines += ["On the end-to-end stream (PocketSphinx's own endpointer and the same matching rule):", "",
                  "| recognizer | correct | wrong | missed | extra | accuracy | decode per segment p50 |",
                  "|---|---|---|---|---|---|---|",
                  (f"| PocketSphinx | {o['correct']} | {o['wrong']} | {o['missed']} | {o['extra']} | "
                  f"{_fmt(_pct(s['accuracy']['value']), '%')} | {_fmt(s['segment_decode_ms'].get('p50'), 'ms')} |")]
        ours = p.get("ours_stream")
        if ours:
            oo = ours["counts"]
            lines.append(f"| digitspot daemon (end-to-end run) | {oo['correct']} | {oo['wrong']} | {oo['missed']} | "
                         f"{oo['extra']} | {_fmt(_pct(ours['accuracy']['value']), '%')} | see inference |")
        lines.append("")
    return lines


def card_metric(card_metrics: dict, condition: str) -> float | None:
    """The training report's INT8 figure for one of our conditions, from the model card's metrics."""
    if condition == "official":
        key = "official_accuracy_int8"
    elif condition.startswith("pitch+"):
        key = f"pitch_+{condition[6:]}c_accuracy_int8"
    else:
        kind, _, snr = condition.partition("-")
        key = f"{kind}_{snr.lower()}_accuracy_int8"
    value = (card_metrics or {}).get(key)
    return value if isinstance(value, (int, float)) else None


def skew_check(a: dict, card_metrics: dict) -> str:
    """Does this install reproduce the training report's official-split accuracy exactly?"""
    official, ref = a["conditions"].get("official"), card_metric(card_metrics, "official")
    if not official or ref is None:
        return "Skew check skipped: the model card holds no official-split accuracy."
    acc = official["accuracy"]
    if acc["total"] != card_metrics.get("test_files", acc["total"]):
        return "Skew check skipped: a subset of the test files was used (short mode)."
    same = abs(acc["value"] - ref) < 0.5 / max(1, acc["total"])
    verdict_text = ("identical." if same else "DIFFERENT: this install does not reproduce the training report "
                    "(different files, audio stack or model).")
    return (f"**Skew check:** official-split accuracy here {acc['value'] * 100:.1f}% vs {ref * 100:.1f}% in the "
            f"model card: {verdict_text}")


def _accuracy_md(a: dict | None, card_metrics: dict | None = None) -> list[str]:
    if not a:
        return []
    lines = ["## Accuracy suite (digitspot-edge classify on the deployed artifact)", "", a["method"] + ".", "",
             "| condition | accuracy | 95% CI | mean confidence | training report (card, INT8) |",
             "|---|---|---|---|---|"]
    for name, c in a["conditions"].items():
        acc = c["accuracy"]
        ref = card_metric(card_metrics or {}, name)
        lines.append(f"| {name} | {acc['value'] * 100:.1f}% ({acc['successes']}/{acc['total']}) | "
                     f"{acc['ci95'][0] * 100:.1f}-{acc['ci95'][1] * 100:.1f}% | {c['mean_confidence']:.3f} | "
                     f"{'' if ref is None else f'{ref * 100:.1f}%'} |")
    lines += ["", skew_check(a, card_metrics or {})]
    lines += ["", ("The training report's figures come from `digitspot-train evaluate` on a workstation; the "
                   "official split must match exactly (same files, same edge code). Pitch conditions differ in "
                   "method (its shift keeps the duration), noise conditions in the random noise drawn.")]
    lines.append("")
    off = a["conditions"].get("official")
    if off:
        lines += ["Per-class F1 on the official split: " + ", ".join(
            f"{d}: {v['f1']:.3f}" for d, v in off["per_class"].items()), ""]
    for key in ("figure", "confusion_figure"):
        if a.get(key):
            lines += [f"![{key}]({a[key]})", ""]
    return lines


def write_report(report: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    write_json_atomic(json_path, report)
    write_bytes_atomic(md_path, render_markdown(report).encode("utf-8"))
    for path in (json_path, md_path):
        path.chmod(0o644)  # a report is for everyone to read, whatever the umask
    return json_path, md_path


def load_report(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# -- completing a run's report -------------------------------------------------------------------

FIGURES = (("inference", "inference", "figure"), ("e2e", "e2e", "figure"),
           ("confusion", "accuracy", "confusion_figure"), ("accuracy", "accuracy", "figure"))


def complete_report(report: dict[str, Any], thresholds: Thresholds, x86: bool, only: bool) -> dict[str, Any]:
    """Add what is known once every section has run: figures, caveats, targets and the verdict.

    ``only``: the sections were chosen with ``--only``, so targets of the others are not misses."""
    for key, section_name, name_field in FIGURES:
        name = (report.get(section_name) or {}).get(name_field)
        if name:
            report["figures"][key] = name
    report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["caveats"] = caveats(report)
    report["thresholds"] = asdict(thresholds)
    report["targets"] = evaluate_targets(report, thresholds, x86)
    if only:
        for row in report["targets"]:
            if row["measured"] is None and not row["skipped"]:
                row["gated"] = False
    report["passed"] = verdict(report["targets"], report["errors"])
    return report


def caveats(report: dict[str, Any]) -> list[str]:
    """What a reader must know before quoting a figure: the machine's load, clocks, how times are taken."""
    m = report["machine"]
    busy = report.get("machine_busy") or {}
    out = [
        (f"Shared machine: {m['logical_cores']} logical cores, load average {m['loadavg_at_start']} at start and "
         f"{report.get('loadavg_at_end')} at the end; during the benchmark all CPUs together were "
         f"{busy.get('busy_percent', '?')}% busy (steal {busy.get('steal_percent', '?')}%), this benchmark and "
         "its daemons included, other people's jobs too. Tails (p99, max) are the most sensitive to that; "
         "medians much less. Re-run on an idle machine before quoting a tail."),
        "CPU frequency scaling and turbo are not controlled; a VM's vCPU may be time-sliced.",
        ("Inference latency is the onnxruntime call for one already-windowed 1-s input (the daemon's "
         "OnnxDigitClassifier.logits); windowing and softmax add microseconds."),
        ("End-to-end stamps are taken in Python on both sides (feeder after write(), subscriber in paho's "
         "on_message), so each includes tens of microseconds of interpreter time; the feeder's own lateness "
         "against its schedule is reported."),
        ("Throughput and false triggers per hour use `--source file` without `--realtime` (as fast as the "
         "daemon runs), which assumes its decisions depend on the samples, not on wall-clock time; the "
         "real-time stream's gaps and the real-time idle window give independent real-time counts."),
        ("Pitch shifts: " + {"wsola": "WSOLA time-stretch then soxr resampling (duration kept; formants move "
                                      "with the pitch). The training report uses audiomentations' "
                                      "PitchShift: same idea, different algorithm, so small differences "
                                      "are expected.",
                             "resample": "soxr resampling only (pitch, formants and tempo change together); "
                                         "the training report's duration-preserving shift gives different "
                                         "numbers."}[report["settings"]["pitch_method"]]),
    ]
    if report["mode"] == "short":
        out.insert(0, "SHORT MODE: small counts; every figure is indicative only and the pass/fail verdict "
                      "is not a measurement of the targets.")
    if not report["machine"]["versions"].get("torch"):
        out.append("torch is not installed: TorchScript and eager latency were skipped.")
    return out
