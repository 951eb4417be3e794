"""Export of the classifier to ONNX and TensorRT, and the runtimes that execute those graphs."""
