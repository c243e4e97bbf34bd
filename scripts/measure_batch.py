"""Does batching decode windows pay on this machine? (issue 10, "Many streams, one model")

Variants, for N windows of 3-6 s of real speech, greedy with word timestamps (what a step decode does):
  seq   N sequential `transcribe` calls
  enc   one batched encoder pass, then N per-window transcribes that reuse their row
  gen   one batched encoder pass, one batched generate, one batched align (raw CTranslate2)
Prints wall and CPU seconds per window (medians of REPS, variants interleaved).

    .venv/bin/python scripts/measure_batch.py [--models tiny.en base] [--frames 3000 1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from streamer.audio.decode import load_audio
from streamer.decode import batch
from streamer.decode.engine import _context_model_class
from streamer.models import resolve_model

AUDIO = Path(os.environ.get("STREAMER_AUDIO", "../shared/audio"))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def windows(n: int) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for f in sorted((AUDIO / "en").glob("*.flac")):
        a = load_audio(f)
        if 3.0 <= len(a) / 16000 <= 6.0:
            out.append(a)
        if len(out) == n:
            return out
    raise SystemExit("not enough 3-6 s files")


KW = dict(
    language="en",
    beam_size=1,
    temperature=[0.0],
    condition_on_previous_text=False,
    word_timestamps=True,
    vad_filter=False,
    max_new_tokens=80,
)


def run_seq(model, audios, frames):
    model.encode_frames = frames
    return [" ".join(s.text for s in model.transcribe(a, **KW)[0]).strip() for a in audios]


def run_enc(model, audios, frames):
    model.encode_frames = frames
    rows = batch.encode_batch(model, audios, frames)
    texts = []
    for a, row in zip(audios, rows, strict=True):
        model.encoded = row
        texts.append(" ".join(s.text for s in model.transcribe(a, **KW)[0]).strip())
    return texts


def run_gen(model, audios, frames):
    import ctranslate2

    feats = np.stack([batch.features(model, a, frames) for a in audios])
    enc = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)))
    tok = model.hf_tokenizer
    sot = [tok.token_to_id(t) for t in ("<|startoftranscript|>",)]
    if model.model.is_multilingual:
        sot += [tok.token_to_id("<|en|>"), tok.token_to_id("<|transcribe|>")]
    prompt = [*sot, tok.token_to_id("<|notimestamps|>")]
    res = model.model.generate(enc, [prompt] * len(audios), beam_size=1, max_length=80)
    eot = tok.token_to_id("<|endoftext|>")
    toks = [[t for t in r.sequences_ids[0] if t < eot] for r in res]
    model.model.align(enc, sot, toks, [len(a) // 160 for a in audios])
    return [tok.decode(t).strip() for t in toks]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    ap.add_argument("--ns", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--frames", nargs="+", type=int, default=[3000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    print(f"load {os.getloadavg()}")
    variants = {"seq": run_seq, "enc": run_enc, "gen": run_gen}
    for name in args.models:
        model = _context_model_class()(
            str(resolve_model(name).path), device="cpu", compute_type="int8", cpu_threads=args.threads
        )
        for frames in args.frames:
            fr = frames if frames < 3000 else None
            for n in args.ns:
                audios = windows(n)
                run_seq(model, audios[:1], fr)  # warm up
                times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
                texts: dict[str, list[str]] = {}
                for _ in range(args.reps):
                    for v, fn in variants.items():  # interleaved: the machine is shared
                        w0, c0 = time.perf_counter(), cpu()
                        texts[v] = fn(model, audios, fr)
                        times[v].append((time.perf_counter() - w0, cpu() - c0))
                row = [f"{name:8s} frames={frames} N={n}"]
                for v in variants:
                    w = statistics.median(t[0] for t in times[v]) / n
                    c = statistics.median(t[1] for t in times[v]) / n
                    row.append(f"{v}: wall {w:.3f} cpu {c:.3f}")
                same = texts["seq"] == texts["enc"]
                print(" | ".join(row), f"| enc text == seq: {same}", flush=True)
                if not same:
                    print("   seq:", texts["seq"], "\n   enc:", texts["enc"])
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
