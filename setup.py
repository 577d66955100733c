"""Install the ``agreid`` package from ``projects/AGReID``.

fastreid itself is installed separately with ``pip install --no-deps fastreid==1.4.0``: its
wheel pins torch 1.13.1, which has no build for Python 3.11. Its real run-time needs are
listed here instead. faiss comes through an extra: ``[cpu]`` (default in the Makefile) or
``[gpu]``; both provide the same ``faiss`` module, so never install both.
"""
from setuptools import find_packages, setup

FASTREID_RUNTIME = [
    "termcolor",
    "tabulate",
    "tqdm",
    "tensorboard",
    "opencv-python-headless",
    "scikit-learn",
    "yacs",
    "fvcore",
    "iopath",
    "Pillow",
    "numpy",
    "scipy",
]

setup(
    name="agreid",
    version="0.1.0",
    description="AG-ReID: attribute guidance for occluded person re-identification, a fastreid plugin",
    license="Apache-2.0",
    package_dir={"": "projects/AGReID"},
    packages=find_packages("projects/AGReID"),
    package_data={"agreid": ["modeling/model_configs/*.json"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "open_clip_torch>=2.24",
        "timm>=0.9",
        "scikit-image>=0.21",
        # Deployment and inspection tools (tools/extract_features.py, search.py, gradcam.py,
        # export_image_encoder.py --onnx, benchmark_infer.py).
        "safetensors>=0.4",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "onnxscript>=0.7",  # torch.onnx.export(dynamo=True), the exporter torch recommends
        "grad-cam>=1.5",
        # Plots of the experiment tools (tools/ablate.py, probe_attributes.py, analyze_noise_mask.py).
        "matplotlib>=3.5",
        *FASTREID_RUNTIME,
    ],
    extras_require={
        "cpu": ["faiss-cpu>=1.7.4"],
        "gpu": ["faiss-gpu>=1.7.2"],
        "test": ["pytest>=7", "pytest-timeout"],
    },
)
