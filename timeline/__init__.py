"""The render domain: compilation spec, render plan, encoder profiles, probe, progress.

Pure Python + msgspec + the ffmpeg/ffprobe binaries. Knows nothing of HTTP or databases.
"""
