"""The command lines of the user-facing tools around a trained model.

The rule: ``tools/<name>.py`` is a shell that runs ``agreid.cli.<name>.main()``; the module
``agreid.cli.<name>`` holds that tool's docstring (its ``--help``), its argparse parser,
``main(argv=None) -> int`` and the logic only that tool uses. What other code reuses lives in the
library modules the tools drive: :mod:`agreid.predictor` (features of image files),
:mod:`agreid.modeling.deploy` and :mod:`agreid.deploy_onnx` (the exported encoder),
:mod:`agreid.visualization` and :mod:`agreid.heatmaps` (pictures), :mod:`agreid.serialization`
(reading and writing checkpoints).

- :mod:`agreid.cli.export_image_encoder`: the image encoder alone (safetensors, ``torch.export``,
  ONNX, TorchScript); ``tools/export_image_encoder.py``.
- :mod:`agreid.cli.extract_features`: features of your own images; ``tools/extract_features.py``.
- :mod:`agreid.cli.search`: search a gallery of your own images (faiss); ``tools/search.py``.
- :mod:`agreid.cli.visualize_ranklist`: rank lists of a registered dataset, one or two models;
  ``tools/visualize_ranklist.py``.
- :mod:`agreid.cli.gradcam`: heat maps and the noise mask's attribute slots; ``tools/gradcam.py``.
- :mod:`agreid.cli.convert_clipreid`: CLIP-ReID checkpoints in this project's format;
  ``tools/convert_clipreid.py``.

Each module imports what its tool needs when imported; ``import agreid.cli`` alone is cheap.
"""
