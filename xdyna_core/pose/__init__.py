"""Driving poses: DWPose extraction (onnxruntime) and an offline MediaPipe backend, the POSE_KEYPOINT format,
X-Dyna-style drawing, retargeting onto the reference body, and One Euro smoothing."""
