"""Files: atomic writes, loading that never unpickles code, checkpoints."""
