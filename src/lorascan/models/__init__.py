"""The only place that loads base models, tokenizers and adapters (safe formats only)."""
