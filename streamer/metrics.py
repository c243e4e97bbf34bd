"""Prometheus metrics (prometheus_client), defined once and shared by the pipeline and the sinks.

Served as text on `/metrics`. Labels are kept small: the stream name and, where it matters, the
kind of decode or the filter.
"""

from __future__ import annotations

from prometheus_client import REGISTRY as _DEFAULT
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY: CollectorRegistry = _DEFAULT

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_DECODE_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)

AUDIO_CAPTURED = Counter("streamer_audio_captured_seconds", "Audio captured (s)", ["stream"])
AUDIO_DROPPED = Counter(
    "streamer_audio_dropped_seconds", "Audio dropped because the consumer fell behind (s)", ["stream"]
)
VAD_SPEECH = Counter("streamer_vad_speech_seconds", "Audio inside VAD speech (s)", ["stream"])
SOURCE_ERRORS = Counter("streamer_source_errors", "Source failures (each retry counts)", ["stream"])
DECODES = Counter("streamer_decodes", "Whisper decodes", ["stream", "kind"])
DECODE_SECONDS = Histogram(
    "streamer_decode_seconds", "Wall time of one decode (s)", ["kind"], buckets=_DECODE_BUCKETS
)
DECODE_RTF = Histogram(
    "streamer_decode_rtf",
    "Real-time factor of one decode (decode time / window length)",
    ["kind"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)
DECODE_BATCH = Histogram(
    "streamer_decode_batch_size",
    "Windows per batched encoder call (model.batch_size > 1)",
    buckets=(2, 3, 4, 6, 8, 16, 32),
)
LATENCY = Histogram(
    "streamer_caption_latency_seconds",
    "emitted_at - end of caption events (audio clock, s)",
    ["stream", "kind"],
    buckets=_LATENCY_BUCKETS,
)
PARTIALS = Counter("streamer_partials", "Partial events emitted", ["stream"])
FINALS = Counter("streamer_finals", "Final events emitted", ["stream"])
STABLE_REVISED = Counter(
    "streamer_stable_revised", "Finals whose text changed words the partials had marked stable", ["stream"]
)
DECODES_CANCELLED = Counter(
    "streamer_decodes_cancelled",
    "Decode requests cancelled before they ran (obsolete, superseded, speech resumed)",
    ["stream", "kind", "reason"],
)
DECODES_DISCARDED = Counter(
    "streamer_decodes_discarded",
    "Decode results discarded because their request became obsolete while it ran",
    ["stream", "kind", "reason"],
)
DECODE_FAILURES = Counter(
    "streamer_decode_failures",
    "Decodes that raised; the stream went on without them (a final closes with what was settled)",
    ["stream", "kind"],
)
DECODE_CUT = Counter(
    "streamer_decode_cut",
    "Decodes bounded: token limit reached, temperature fallback skipped",
    ["stream", "reason"],
)
DECODE_CONTINUED = Counter(
    "streamer_decode_continued",
    "Final decodes run once more from where Whisper's output ended with speech left in the window",
    ["stream"],
)
QUEUE_WAIT = Histogram(
    "streamer_decode_queue_seconds",
    "Time a decode request waited in the queue (s)",
    ["kind"],
    buckets=_DECODE_BUCKETS,
)
DEGRADED_LEVEL = Gauge(
    "streamer_degraded_level",
    "Decoder degradation: 0 normal, 1 cheaper finals, 2 partials thinned, 3 finals only",
    ["model"],
)
PARTIALS_SKIPPED = Counter(
    "streamer_partials_skipped",
    "Step decodes not made because the decoder was degraded (partials thinned)",
    ["stream"],
)
SUPPRESSED = Counter(
    "streamer_hallucinations_suppressed", "Segments or words dropped by a filter", ["stream", "filter"]
)

RTP_PACKETS = Counter("streamer_rtp_datagrams", "UDP datagrams received by an RTP source", ["stream"])
RTP_BYTES = Counter("streamer_rtp_bytes", "Bytes of UDP datagrams received by an RTP source", ["stream"])
RTP_EVENTS = Counter(
    "streamer_rtp_packets",
    "RTP packets by what the jitter buffer did: lost (never came), reordered, late (dropped), duplicate",
    ["stream", "event"],
)
RTP_MALFORMED = Counter(
    "streamer_rtp_malformed", "RTP datagrams dropped as malformed or undecodable", ["stream", "kind"]
)
RTP_REJECTED = Counter(
    "streamer_rtp_rejected", "RTP datagrams from senders not on the allow-list", ["stream"]
)
RTP_CONCEALED = Counter(
    "streamer_rtp_concealed_seconds", "Silence inserted for lost RTP packets (s)", ["stream"]
)
RTP_KERNEL_DROPS = Counter(
    "streamer_rtp_kernel_drops",
    "Datagrams the kernel dropped on an RTP socket because its receive buffer was full",
    ["stream"],
)
INGEST_GAP = Counter(
    "streamer_ingest_gap_seconds",
    "Silence written into an ingest stream while no client sent audio (s); not audio lost",
    ["stream"],
)
INGEST_BYTES = Counter("streamer_ingest_bytes", "PCM bytes received on /ingest", ["stream"])
INGEST_REJECTED = Counter("streamer_ingest_rejected", "/ingest connections or frames refused", ["reason"])

WS_CLIENTS = Gauge("streamer_ws_clients", "Connected WebSocket clients")
WS_DROPPED_PARTIALS = Counter("streamer_ws_dropped_partials", "Partials dropped for slow clients")
WS_SLOW_CLOSED = Counter("streamer_ws_slow_clients_closed", "Clients closed for falling behind on finals")
WS_REJECTED = Counter("streamer_ws_rejected", "WebSocket upgrades or messages refused", ["reason"])
ADDRESS_LIMIT_REFUSED = Counter(
    "streamer_address_limit_refused",
    "WebSocket upgrades (route=ws) or file API requests (route=api) refused by a per-address limit",
    ["route"],
)
API_REFUSED = Counter(
    "streamer_api_refused",
    "File API requests refused: busy, per_address, too_slow (upload), too_large, too_long (audio)",
    ["reason"],
)

MQTT_PUBLISHES = Counter("streamer_mqtt_publishes", "MQTT messages published", ["kind"])
MQTT_OUTBOX = Gauge("streamer_mqtt_outbox_depth", "Finals waiting for the MQTT broker")
MQTT_OUTBOX_OVERFLOW = Counter("streamer_mqtt_outbox_overflow", "Finals dropped from a full MQTT outbox")
MQTT_RECONNECTS = Counter("streamer_mqtt_reconnects", "MQTT reconnect attempts")
MQTT_CONNECTED = Gauge("streamer_mqtt_connected", "1 while connected to the MQTT broker")

TRANSCRIPT_ERRORS = Counter("streamer_transcript_errors", "Transcript file write failures")

# What the systemd watchdog sees, for operators without systemd (containers) and for alerts that
# should fire before systemd restarts the daemon (daemon._supervise).
PROGRESS_AGE = Gauge(
    "streamer_progress_age_seconds",
    "Seconds since the stream last made progress: the older of its loop heartbeat and its oldest "
    "unfinished decode (the watchdog is withheld past service.progress_timeout)",
    ["stream"],
)
CONSOLE_DROPPED = Counter(
    "streamer_console_dropped", "Events dropped because stdout did not keep up", ["kind"]
)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
