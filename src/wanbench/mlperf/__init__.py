"""The MLPerf Inference text-to-video scenario (Wan2.2-T2V-A14B) driven through the real LoadGen."""
