"""Configuration dataclasses: every default, its help text and its checks, once.

    options.py    the machinery: `option(...)` fields, checks on construction, JSON round trips
    model.py      ModelConfig: what builds a GenerativeMultimodalModel (a checkpoint's config.json)
    sampling.py   SamplingConfig (how text→image draws) and InferenceConfig (what it computes in)
    training.py   TrainConfig: how train.py trains; a whole run's flat mapping split between the two
                  (`split_run_config`), the design documents' names for our fields (DESIGN_NAMES)
    tools.py      the configs of visualize.py, app.py, the ONNX export and the shapes-set drawing

The named presets they start from are records in multimodal/presets.py. Nothing here imports
torch, so `--help` and usage errors answer at once.
"""

from multimodal.config.model import (
    EMBEDDING_POOLINGS,
    IMAGE_ENCODERS,
    LATENT_REGULARIZERS,
    NOISE_SCHEDULES,
    PREDICTION_TYPES,
    PRETRAINED_STRIDE,
    ModelConfig,
    model_preset,
    num_stride2_stages,
)
from multimodal.config.options import Config, option, suggest
from multimodal.config.sampling import (
    DEFAULT_MAX_NEW_TOKENS,
    PRECISIONS,
    SAMPLERS,
    SAMPLERS_WITH_ETA,
    InferenceConfig,
    SamplingConfig,
    preset_sampling,
    sampling_presets,
)
from multimodal.config.tools import EMBEDDING_MAPS, ExportConfig, ServeConfig, ShapesConfig, VisualizeConfig
from multimodal.config.training import (
    DATA_FIELDS,
    DATA_FORMATS,
    DESIGN_NAMES,
    LORA_TARGETS,
    REPORT_TO,
    TRAIN_PRECISIONS,
    TrainConfig,
    default_data_dir,
    split_run_config,
    train_preset,
)

__all__ = [
    "DATA_FIELDS", "DATA_FORMATS", "DEFAULT_MAX_NEW_TOKENS", "DESIGN_NAMES", "EMBEDDING_MAPS", "EMBEDDING_POOLINGS",
    "IMAGE_ENCODERS", "LATENT_REGULARIZERS", "LORA_TARGETS", "NOISE_SCHEDULES", "PRECISIONS", "PREDICTION_TYPES",
    "PRETRAINED_STRIDE", "REPORT_TO", "SAMPLERS", "SAMPLERS_WITH_ETA", "TRAIN_PRECISIONS", "Config", "ExportConfig", "InferenceConfig",
    "ModelConfig", "SamplingConfig", "ServeConfig", "ShapesConfig", "TrainConfig", "VisualizeConfig",
    "default_data_dir", "model_preset", "num_stride2_stages", "option", "preset_sampling", "sampling_presets",
    "split_run_config", "suggest", "train_preset",
]
