"""The adapter contract every model family implements.

An adapter turns a registered model card into a built `nn.Module` on a device and knows the
family's own pre- and postprocessing, so the harness can time every family the same way:

    adapter = create_model("fast-scnn")
    adapter.build(device)                      # random weights unless the suite gives a file
    x = adapter.preprocess(images_uint8)        # host uint8 (N, H, W, 3) -> device float NCHW
    out = adapter.forward(x)                    # the timed forward pass
    labels = adapter.postprocess(out, (H, W))   # class-id map (N, H, W), uint8 (int16 past 256 classes), on the host

The contract for your own model (a plugin: `--plugin my_models.py`, or a suite's `plugins:`):

- must: subclass `SegmentationAdapter`, implement `build_module()` returning an `nn.Module` built on
  the CPU with random weights (never downloading) and `self.num_classes` classes, and call
  `registry.register(ModelCard(...), YourAdapter)` at import. The module's forward takes the float
  NCHW batch `preprocess` made and, unless `logits` is overridden, returns scores (N, C, h, w), any h, w.
- may override, each with the return it must keep: `preprocess` -> float NCHW tensor on `self.device`
  in `self.input_dtype`; `forward` -> whatever `logits` understands; `logits` -> scores (N, C, h, w);
  `postprocess` -> integer class ids (N, H, W) at the input size, in `label_dtype` of the class count, where
  `self.output_policy.map_device` says (the host by default; `class_map` does all of it from scores);
  `read_weights` -> `Checkpoint`;
  `load_weights` -> None (loads in place, raises `WeightsError` on a mismatch); `finalize` -> module;
  `forward_parts` -> named sequential parts or None; `notes` -> list of caveat strings.
- class attributes: `constraints` (`InputConstraints`: minimum side, pad or refuse other sizes),
  `options_schema` (pydantic model of `models[].options`), `mean`/`std` (normalisation).

docs/adapters.md walks through the same contract with the README's twenty-line example.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from segbench.errors import WeightsError
from segbench.models._common import read_state_file, strict_load
from segbench.models.weights import fetch, named_kind

IMAGENET_MEAN = (0.485, 0.456, 0.406)
UINT8_CLASSES = 256  # class ids 0..255 fit a uint8 map
INT16_CLASSES = 2**15
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputConstraints:
    """What input sizes a model accepts, and what the harness does with others.

    policy "any": every size >= min_size works; "pad": sizes are padded up to a multiple of
    `multiple_of` (and the padding is recorded); "refuse": other sizes are a suite error.
    """

    min_size: int = 32
    multiple_of: int = 1
    policy: Literal["any", "pad", "refuse"] = "any"

    def problem(self, height: int, width: int) -> str | None:
        """Why (height, width) cannot be run, or None when it can."""
        if min(height, width) < self.min_size:
            return f"smaller than the model's minimum side of {self.min_size} px"
        if self.policy == "refuse" and (height % self.multiple_of or width % self.multiple_of):
            return f"not a multiple of {self.multiple_of} (use e.g. {self.padded(height, width)})"
        return None

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The size the model actually sees."""
        if self.policy != "pad":
            return height, width
        m = self.multiple_of
        return math.ceil(height / m) * m, math.ceil(width / m) * m


ResizeWhat = Literal["logits", "labels"]
InterpolateDtype = Literal["float32", "logits"]
MapDevice = Literal["host", "device"]


@dataclass(frozen=True)
class OutputPolicy:
    """How `class_map` turns scores into the class map a deployment gets (the suite's `end_to_end:` block).

    The defaults give the labels of the reference path bit for bit (scores upsampled bilinearly in float32, then
    the first maximum): only the work that cannot change a label was cut (argmax's strided reduction, the int64
    map). The other values trade labels or placement for speed, and the record says which ran:
    resize "labels" reduces at the logits' resolution and nearest-upsamples the class map (C times less to
    resize; labels move along class borders); interpolate_dtype "logits" resizes in the logits' own dtype, as
    HF's image processors do (fp16/bf16 logits: near-ties may flip; on CPUs half interpolation is slower);
    map_device "device" leaves the map where the forward ran, as HF and ultralytics do, for a consumer there.
    """

    resize: ResizeWhat = "logits"
    interpolate_dtype: InterpolateDtype = "float32"
    map_device: MapDevice = "host"

    def describe(self) -> str:
        resize = (
            "scores resized to the input, then reduced"
            if self.resize == "logits"
            else "reduced at the logits' resolution, the class map nearest-upsampled"
        )
        dtype = "in float32" if self.interpolate_dtype == "float32" else "in the logits' dtype"
        return f"{resize} ({dtype}); first maximum; uint8/int16 map on the {self.map_device}"


def label_dtype(classes: int) -> torch.dtype:
    """The smallest integer dtype that holds class ids 0..classes-1 (uint8 up to 256 classes, then int16)."""
    if classes <= UINT8_CLASSES:
        return torch.uint8
    return torch.int16 if classes <= INT16_CLASSES else torch.int32


def first_max_indices(scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """argmax's labels (the first maximum wins a tie; NaN counts as the maximum) through `max(dim).indices`,
    whose CPU kernel reduces a strided NCHW channel dim several times faster than argmax's."""
    return scores.max(dim=dim).indices


def deliver(labels: torch.Tensor, policy: OutputPolicy) -> torch.Tensor:
    """The class map where the deployment needs it: copied to the host, or left on the forward's device."""
    return labels.cpu() if policy.map_device == "host" else labels


class HeadOptions(BaseModel):
    """Options every family with a class head takes: its class count and the names of its classes."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int | None = Field(
        None, ge=1, description="classes of the head (label ids 0..N-1); default: the weights' head, else the card's"
    )
    class_names: list[str] | None = Field(None, description="one name per class id, for predict's JSON and the reports")

    @model_validator(mode="after")
    def _one_name_per_class(self) -> HeadOptions:
        if self.num_classes is not None and self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}; give one name "
                "per class"
            )
        return self



@dataclass(frozen=True)
class Checkpoint:
    """What a weights file holds: the state dict, and the class names when the format carries them."""

    state: Mapping[str, torch.Tensor]
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelCard:
    """Static facts about one registered model, known without building it."""

    name: str
    family: str
    variant: str
    source: str  # the library that defines the architecture: segbench, ultralytics, transformers, torchvision
    num_classes: int
    dataset: str  # which label set the head is sized for
    published_params_m: float | None = None
    params_source: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific build arguments
    class_names: tuple[str, ...] | None = None  # names of the card's label set, where it is public


class SegmentationAdapter(ABC):
    """One family's way of building, feeding and reading a segmentation model."""

    constraints: ClassVar[InputConstraints] = InputConstraints()
    options_schema: ClassVar[type[BaseModel]] = HeadOptions
    # Modules a warm template imports before forking this family's cells (see segbench.run.forkserver).
    warm_imports: ClassVar[tuple[str, ...]] = ()
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    # Regexes of the state-dict keys whose first dimension is the head's row count, and how many rows the
    # head has beyond the classes (Mask2Former's "no object": 1; YOLO-seg's background has no row: -1).
    head_keys: ClassVar[tuple[str, ...]] = ()
    head_extra_rows: ClassVar[int] = 0
    # How postprocess hands over the class map; the cell sets the suite's (end_to_end:), so plain uses get the default.
    output_policy: OutputPolicy = OutputPolicy()

    def __init__(self, card: ModelCard, weights: Path | None = None, options: dict[str, Any] | None = None):
        self.card = card
        self.weights = Path(weights) if weights else None
        self.options = self.options_schema.model_validate(options or {})
        self.model: nn.Module | None = None
        self.device = torch.device("cpu")
        self.input_dtype = torch.float32
        self.weights_name: str | None = None  # the library name the weights were given by, when they were
        self.num_classes: int = getattr(self.options, "num_classes", None) or card.num_classes
        self.class_names: tuple[str, ...] | None = self._default_names(None)

    # ---- building -------------------------------------------------------------------------
    @abstractmethod
    def build_module(self) -> nn.Module:
        """Construct the architecture on the CPU with random weights (no downloads), with `self.num_classes` classes."""

    def fetch_named_weights(self, name: str) -> Path:
        """The local file behind a library's weights name (a Hub id, an ultralytics asset, a torchvision enum)."""
        if named_kind(name, self.card.source) is None:
            raise WeightsError(
                f"{self.card.name}: weights not found: {name} (fix the path under models[].weights, or give a name "
                f"{self.card.source} knows)"
            )
        try:
            path = fetch(name, self.card.source)
        except WeightsError as exc:
            raise WeightsError(f"{self.card.name}: {exc}") from None
        self.weights_name = name
        return path

    def read_weights(self, path: Path) -> Checkpoint:
        """A local state dict (.safetensors or torch-saved); families with their own formats override this."""
        return Checkpoint(read_state_file(self.card.name, path))

    def load_weights(self, module: nn.Module, path: Path, checkpoint: Checkpoint | None = None) -> None:
        """Load every tensor of the architecture from the weights file, or say which does not fit."""
        strict_load(self.card.name, module, (checkpoint or self.read_weights(path)).state, path)

    def classes_in_state(self, state: Mapping[str, torch.Tensor]) -> int | None:
        """The class count of a checkpoint's head, from the shape of its classifier; None when not recognised."""
        for key, tensor in state.items():
            if tensor.ndim and any(re.fullmatch(pattern, key) for pattern in self.head_keys):
                return int(tensor.shape[0]) - self.head_extra_rows
        return None

    def _default_names(self, checkpoint: Checkpoint | None) -> tuple[str, ...] | None:
        """Names from the weights when they carry them, else the option, else the card's label set if the count fits."""
        option = getattr(self.options, "class_names", None)
        for names in (checkpoint.class_names if checkpoint else None, option, self.card.class_names):
            if names and len(names) == self.num_classes:
                return tuple(names)
        return None

    def adopt_head(self, checkpoint: Checkpoint, path: Path) -> None:
        """Size the head like the checkpoint's (or refuse a contradicting num_classes), and take its class names."""
        option = getattr(self.options, "num_classes", None)
        found = self.classes_in_state(checkpoint.state)
        if option is not None and found is not None and option != found:
            raise WeightsError(
                f"{self.card.name}: weights file {path} has a {found}-class head but options.num_classes is {option}; "
                f"set options.num_classes: {found}"
            )
        self.num_classes = option or found or self.card.num_classes
        names = getattr(self.options, "class_names", None)
        if checkpoint.class_names is None and names is not None and len(names) != self.num_classes:
            raise WeightsError(
                f"{self.card.name}: options.class_names has {len(names)} names but the weights' head has "
                f"{self.num_classes} classes; give one name per class"
            )
        self.class_names = self._default_names(checkpoint)

    def finalize(self, module: nn.Module) -> nn.Module:
        """Inference-time rewrites after the weights are in (e.g. Conv+BN fusion), so weight files keep the training
        layout."""
        return module

    def build(self, device: torch.device | str = "cpu") -> nn.Module:
        """Build (seeded, so every process gets the same random weights), load weights, finalize, move to device."""
        if self.weights is not None and not self.weights.exists():
            self.weights = self.fetch_named_weights(str(self.weights))
        if self.weights is not None and not (self.weights.is_file() or self.weights.is_dir()):
            raise WeightsError(  # a FIFO or a device: reading it would block forever or never end
                f"{self.card.name}: weights {self.weights} is not a regular file or folder; give a weights file"
            )
        torch.manual_seed(0)
        checkpoint = self.read_weights(self.weights) if self.weights is not None else None
        if checkpoint is not None:
            self.adopt_head(checkpoint, self.weights)
        module = self.build_module()
        if checkpoint is not None:
            self.load_weights(module, self.weights, checkpoint)
        module = self.finalize(module)
        self.device = torch.device(device)
        self.model = module.eval().to(self.device)
        return self.model

    def notes(self) -> list[str]:
        """Caveats about this model's figures that belong next to them in results and reports."""
        return []

    def parameter_count(self) -> int:
        assert self.model is not None, "build() first"
        return sum(p.numel() for p in self.model.parameters())

    # ---- the three timed stages -----------------------------------------------------------------
    def model_input_size(self, height: int, width: int) -> tuple[int, int]:
        return self.constraints.padded(height, width)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Host uint8 (N, H, W, 3) -> normalised float NCHW on the device, padded where the family needs it."""
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        height, width = x.shape[-2:]
        target_h, target_w = self.model_input_size(height, width)
        if (target_h, target_w) != (height, width):
            x = F.pad(x, (0, target_w - width, 0, target_h - height))
        return x.to(self.input_dtype).contiguous(memory_format=self.memory_format())

    def memory_format(self) -> torch.memory_format:
        return torch.contiguous_format

    def forward(self, inputs: torch.Tensor) -> Any:
        assert self.model is not None, "build() first"
        return self.model(inputs)

    def forward_parts(self) -> list[tuple[str, Callable[[Any], Any]]] | None:
        """The forward pass as named parts run in sequence (each takes the previous part's output),
        for families whose parts users run at different rates, like SAM's encoder and decoder."""
        return None

    def logits(self, outputs: Any) -> torch.Tensor:
        """Per-class scores (N, C, h, w) from the raw forward output (used by postprocess and fidelity)."""
        return outputs

    def raw_outputs(self, outputs: Any) -> dict[str, torch.Tensor]:
        """The tensors fidelity measures numeric drift on, before any threshold; the first is the headline."""
        return {"logits": self.logits(outputs)}

    def detections(self, outputs: Any) -> int | None:
        """Instances found (families that detect instances); None for dense semantic heads."""
        return None

    def postprocess(self, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
        """Class-id map (N, H, W) at the input resolution (padding cropped), as `output_policy` says."""
        return self.class_map(self.logits(outputs), size)

    def class_map(self, scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Scores (N, C, h, w) -> class ids (N, H, W) in `label_dtype(C)`, where `output_policy` puts them.

        By default the labels of the reference path (float32 bilinear upsample to the padded input, crop, argmax)
        bit for bit, without its costs that cannot change a label: argmax's slow strided reduction and an int64
        map (8x the bytes a uint8 one moves to the host). float32 logits are never copied.
        """
        policy, dtype = self.output_policy, label_dtype(scores.shape[1])
        padded = self.model_input_size(*size)
        if tuple(scores.shape[-2:]) != padded and policy.resize == "labels":
            low = first_max_indices(scores).to(dtype)
            labels = F.interpolate(low[:, None], size=padded, mode="nearest")[:, 0, : size[0], : size[1]]
            return deliver(labels, policy)
        if tuple(scores.shape[-2:]) != padded:
            scores = scores.float() if policy.interpolate_dtype == "float32" else scores
            scores = F.interpolate(scores, size=padded, mode="bilinear", align_corners=False)
        labels = first_max_indices(scores[..., : size[0], : size[1]]).to(dtype)
        return deliver(labels, policy)
