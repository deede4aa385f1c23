"""Who said what: speaker labels for stored sessions (diarizing transcription)."""
