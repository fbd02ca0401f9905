"""OpenCV, imported once for the whole till, with its own logging silenced.

OpenCV prints warnings of its own to stderr ("[ WARN:0@0.02] global cap.cpp ... can't be used
to capture by name") before the till's one clear error; the cashier should read only that.
Every module of the till imports cv2 from here. OPENCV_LOG_LEVEL set by the user, or
PAYCODE_DEBUG, keeps OpenCV's own choice.
"""

from __future__ import annotations

import os

import cv2

__all__ = ["cv2", "video_backend"]

if "OPENCV_LOG_LEVEL" not in os.environ and not os.environ.get("PAYCODE_DEBUG"):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def video_backend() -> int:
    """The backend video files are opened with: FFmpeg when the build has it. Left to choose,
    OpenCV falls back to its own AVI reader, which prints on a damaged file straight to
    stderr ("Unexpected element. Expected: LIST."), past any log level."""
    if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        return int(cv2.CAP_FFMPEG)
    return int(cv2.CAP_ANY)
