// Microphone audio to what `/ingest` takes: 16 kHz mono PCM16. No DOM, no Web Audio: the
// AudioWorklet (mic-worklet.js) runs it, and tests run it on plain arrays.
//
// Written here rather than taken from a library: nothing may load from elsewhere (the pages have
// no bundler and no third-party code), and a windowed-sinc low-pass with fractional stepping is
// small. We do not ask for `new AudioContext({sampleRate: 16000})`: Chromium honours it, but
// Firefox refuses to connect a microphone to a context whose rate differs from the device's, so
// the context runs at the device rate (44.1 or 48 kHz) and this does the conversion everywhere.

export const TARGET_RATE = 16000;

// Anti-alias low-pass, then resampling by linear interpolation between the filtered samples.
// The cut-off sits below the new Nyquist frequency (8 kHz) so what would fold back is attenuated
// before the samples are thinned out; speech carries nothing of value above 7 kHz.
export class Downsampler {
  constructor(inRate, outRate = TARGET_RATE, { taps = 63, cutoff = 7000 } = {}) {
    if (!(inRate > 0) || !(outRate > 0)) throw new RangeError("sample rates must be positive");
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    this.passThrough = inRate === outRate;
    // Blackman-windowed sinc, unity gain at DC.
    const fc = Math.min(cutoff, outRate / 2) / inRate;
    const m = taps - 1;
    const h = new Float32Array(taps);
    let sum = 0;
    for (let i = 0; i < taps; i++) {
      const x = i - m / 2;
      const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
      const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / m) + 0.08 * Math.cos((4 * Math.PI * i) / m);
      h[i] = sinc * w;
      sum += h[i];
    }
    for (let i = 0; i < taps; i++) h[i] /= sum;
    this.h = h;
    this.history = new Float32Array(taps - 1); // the last input samples, for the filter's memory
    this.prev = 0; // the last filtered sample of the previous block
    this.pos = 0; // where the next output sample falls, relative to the current block's start
  }

  // Feed one block of input samples (Float32Array in [-1, 1]); returns the 16 kHz samples it yields.
  process(input) {
    if (this.passThrough) return Float32Array.from(input);
    const taps = this.h.length;
    const hist = this.history.length;
    const buf = new Float32Array(hist + input.length);
    buf.set(this.history, 0);
    buf.set(input, hist);
    const filtered = new Float32Array(input.length);
    for (let n = 0; n < input.length; n++) {
      let acc = 0;
      for (let k = 0; k < taps; k++) acc += this.h[k] * buf[n + taps - 1 - k];
      filtered[n] = acc;
    }
    this.history = buf.slice(buf.length - hist);
    // Output samples at positions pos, pos+step, ... with position -1 being the previous block's
    // last filtered sample (kept in this.prev) so interpolation spans block boundaries.
    const out = [];
    let pos = this.pos;
    while (pos <= input.length - 1) {
      const i = Math.floor(pos);
      const frac = pos - i;
      const a = i < 0 ? this.prev : filtered[i];
      const b = filtered[i + 1 < input.length ? i + 1 : i];
      out.push(a + (b - a) * frac);
      pos += this.step;
    }
    this.pos = pos - input.length;
    if (input.length) this.prev = filtered[input.length - 1];
    return Float32Array.from(out);
  }
}

// Float samples to signed 16-bit integers (little-endian once sent: every browser runs on a
// little-endian machine, and Int16Array uses the machine's order).
export function toPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
  }
  return out;
}

// Collects samples into frames of a fixed size; push() returns the frames completed.
export class Framer {
  constructor(size) {
    this.size = size;
    this.buf = new Int16Array(size);
    this.fill = 0;
  }

  push(pcm) {
    const frames = [];
    let off = 0;
    while (off < pcm.length) {
      const n = Math.min(this.size - this.fill, pcm.length - off);
      this.buf.set(pcm.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      if (this.fill === this.size) {
        frames.push(this.buf);
        this.buf = new Int16Array(this.size);
        this.fill = 0;
      }
    }
    return frames;
  }
}
