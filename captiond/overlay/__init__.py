"""The caption overlay: an HTTP + WebSocket server for OBS Browser Sources (see server.py)."""
