"""streamer-bench: the benchmarks of streamer (`streamer bench`), a distribution of its own so that
the daemon never imports them. See bench/README.md and docs/benchmarks.md."""
