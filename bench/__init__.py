"""Benchmark harness: the real daemon against embedded Postgres, local storage and a fake Gemini."""
