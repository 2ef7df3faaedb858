"""From a trained teacher to deployable files: teacher cache, distillation, the deployed graph, ONNX/TensorRT export."""
