// AudioWorklet processor "mic-capture": microphone audio (any rate, first channel) to 16 kHz mono
// PCM16 frames of `frameMs` milliseconds, posted to the page as transferable ArrayBuffers.
// The page (mic.js) sends them to /ingest as binary WebSocket messages.
import { Downsampler, Framer, TARGET_RATE, toPcm16 } from "./resample.js";

class MicCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameMs = (options.processorOptions && options.processorOptions.frameMs) || 40;
    // `sampleRate` is the AudioContext's rate, a global of the worklet scope.
    this.down = new Downsampler(sampleRate, TARGET_RATE);
    this.framer = new Framer(Math.round((TARGET_RATE * frameMs) / 1000));
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data === "stop") this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0];
    // No input yet (the source is not connected or was stopped): keep the node alive.
    if (!channels || channels.length === 0) return true;
    const pcm = toPcm16(this.down.process(channels[0]));
    for (const frame of this.framer.push(pcm)) this.port.postMessage(frame.buffer, [frame.buffer]);
    return true;
  }
}

registerProcessor("mic-capture", MicCapture);
