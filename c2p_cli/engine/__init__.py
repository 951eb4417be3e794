"""The classify run: which files (inputs), reading them in reader processes (reader_pool), batches
through a classifier (pipeline), and a whole run streamed to its output, resumable and shardable
under torchrun (run, result_files). `batching` holds the torch-free pieces the ONNX runner shares."""
