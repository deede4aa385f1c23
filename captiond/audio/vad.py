"""Streaming voice-activity detection with silero VAD, from faster-whisper's own assets.

Feed 16 kHz mono float32 in blocks of any size; get one speech probability per 32 ms window
(512 samples). The model's recurrent state and 64-sample context carry across calls, so the
probabilities are the same as for the whole stream at once (a test checks this). Costs about
2 ms of CPU per second of audio.
"""

from __future__ import annotations

import os

import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 512  # samples per probability (32 ms)
CONTEXT = 64  # samples of the previous window the model sees


def _model_path() -> str:
    from faster_whisper.vad import get_assets_path

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


class StreamingVad:
    def __init__(self) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            _model_path(), providers=["CPUExecutionProvider"], sess_options=opts
        )
        self.reset()

    def reset(self) -> None:
        """Forget the stream (after a gap)."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for every window completed by these samples (may be empty)."""
        data = np.concatenate([self._rest, samples.astype(np.float32, copy=False)])
        n = len(data) // WINDOW
        self._rest = data[n * WINDOW :]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        windows = data[: n * WINDOW].reshape(n, WINDOW)
        previous = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]], axis=0)
        batch = np.concatenate([previous, windows], axis=1)
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = windows[-1, -CONTEXT:].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)

    @property
    def buffered(self) -> int:
        """Samples held back until their window is complete."""
        return len(self._rest)
