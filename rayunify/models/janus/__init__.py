"""Janus / Janus-Pro: the unified model on transformers (`model`, its judging side `judging`), our CFG decoding
loop (`decoding`, `kvcache`), and the offline factory of tiny and real-shape models (`factory`, `tokenizer`)."""
