"""The tools' configurations: visualize.py, app.py, the ONNX export and the shapes-set drawing."""

from __future__ import annotations

from dataclasses import dataclass

from multimodal import presets
from multimodal.config.options import Config, option, require


EMBEDDING_MAPS = ("pca", "tsne")  # how visualize.py lays the embeddings out in two dimensions


@dataclass
class VisualizeConfig(Config):
    """What `visualize.py` draws from a training run; it has a flag for each field."""

    output_dir: str | None = option(None, "where the PNGs go (default: <run>/visualize/; files there are replaced)")
    data_dir: str | None = option(None, "data set whose validation split is drawn (default: the run's own)")
    prompt: str | None = option(None, "prompt of the denoising trajectory (default: the first validation caption)")
    num_images: int = option(8, "validation images shown beside their reconstructions")
    map_images: int = option(
        200, "validation images, with one caption each, for the latent statistics and the embedding map"
    )
    embedding_map: str = option(
        "pca", "how the embedding map is laid out: PCA, or t-SNE (slower; keeps neighbours, not distances)",
        choices=EMBEDDING_MAPS,
    )
    trajectory_frames: int = option(8, "denoising steps shown in the trajectory, spread over --steps")
    device: str = option("auto", "where to run; auto: CUDA when present", choices=("auto", "cpu", "cuda"))
    seed: int = option(0, "seed of the trajectory's starting noise", seed=True)

    def validate(self) -> None:
        for name, least in (("num_images", 1), ("map_images", 3), ("trajectory_frames", 2)):
            value = getattr(self, name)
            require(value >= least, name, f"must be at least {least}, got {value}")
        require(self.prompt is None or bool(self.prompt.strip()), "prompt", "must not be empty")


@dataclass
class ServeConfig(Config):
    """How `app.py` serves the web demo; it has a flag for each field."""

    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every network interface)")
    port: int = option(7860, "port to listen on")
    data_dir: str | None = option(
        None, "data set whose validation images give the examples and the search (default: the checkpoint's own)"
    )
    max_upload_mb: float = option(10.0, "largest file a visitor may upload, in megabytes")
    max_megapixels: float = option(25.0, "largest picture a visitor may upload, in millions of pixels")
    max_images: int = option(8, "most images one text→image request may ask for")
    max_captions: int = option(5, "most captions one image→text request may ask for")
    search_images: int = option(1000, "validation images the search tab ranks (the first N)")
    concurrency_limit: int = option(1, "requests the model works on at once; the others wait in the queue")
    queue_size: int = option(100, "requests that may wait; more are turned away with a message")

    def validate(self) -> None:
        require(1 <= self.port <= 65535, "port", f"must be in 1..65535, got {self.port}")
        for name in ("max_upload_mb", "max_megapixels", "max_images", "max_captions", "search_images",
                     "concurrency_limit", "queue_size"):
            require(getattr(self, name) > 0, name, f"must be above 0, got {getattr(self, name)}")


@dataclass
class ExportConfig(Config):
    """How `python -m multimodal.export` writes its ONNX graphs."""

    precision: str = option(
        "fp32", "precision of the graphs' weights and computations; fp16 only where ONNX Runtime runs it "
        "(the export refuses otherwise and says why)", choices=("fp32", "fp16"),
    )


@dataclass
class ShapesConfig(Config):
    """What a built-in shapes set is drawn with (`python -m multimodal.data` has a flag for each field)."""

    num_train: int = option(6000, "training images")
    num_val: int = option(600, "validation images")
    image_size: int = option(presets.get("shapes").model["image_size"], "image side in pixels")
    seed: int = option(0, "seed of the size and position jitter", seed=True)
    colors: str | None = option(
        None, "comma-separated colours to draw (red, green, blue, yellow, purple, cyan, orange); default: the six "
        "standard ones, so orange appears only when named"
    )
    holdout: bool = option(
        False, "keep a fifth of the combinations out of the training split (the shapes-holdout preset's set)"
    )

    def validate(self) -> None:
        for name in ("num_train", "num_val", "image_size"):
            require(getattr(self, name) >= 1, name, f"must be at least 1, got {getattr(self, name)}")

