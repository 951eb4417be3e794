"""What is kept on disk: safetensors + JSON checkpoints (checkpoints), the checked schema of run-folder
files (run_files), atomic writes (atomic), the cache folders (paths, caches)."""
