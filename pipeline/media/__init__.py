"""Media: video and image IO, dlib faces and landmarks, ROI cropping and its checks, audio features, rendered faces.

Everything that turns pixels or samples into other pixels or samples lives here; nothing here writes shards.
"""
