"""Offline batch jobs: OpenAI batch lines in, OpenAI batch output lines out, resumable."""
