"""captiond: live captions and meeting transcripts from system audio or the microphone."""

__version__ = "0.1.0"
