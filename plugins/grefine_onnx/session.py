"""One exported graph behind an ONNX Runtime session: static-shape padding, batch chunking and
IO binding (device memory in and out on a GPU provider)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grefine_onnx.providers import SessionConfig, create_session

log = logging.getLogger("grefine.onnx")

_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64}


class OrtGraph:
    """A session for one graph of an export (see :mod:`grefine_onnx.export`).

    Inputs may be numpy arrays or torch tensors (CPU or, with IO binding, CUDA). A static graph
    gets its batch split into and padded up to the fixed batch (text ids are also padded to the
    fixed length); a dynamic one is split into chunks of at most ``max_batch``.

    :param path: the ``.onnx`` file.
    :param info: its entry of the manifest's ``graphs`` (names, shapes, dtypes).
    :param config: session configuration.
    :param max_batch: largest batch per run for a dynamic graph (``None``: no limit).
    :param profile: TensorRT shape profile for a dynamic graph.
    :param what: a name for messages.
    """

    def __init__(
        self,
        path: str | Path,
        info: Mapping[str, Any],
        config: SessionConfig,
        *,
        max_batch: int | None = None,
        profile: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
        what: str = "",
    ):
        self.path = Path(path)
        self.what = what or self.path.stem
        ((self.input_name, inp),) = info["inputs"].items()
        ((self.output_name, out),) = info["outputs"].items()
        self.input_shape = list(inp["shape"])
        self.output_shape = list(out["shape"])
        self.input_dtype = _NP_DTYPES[inp["dtype"]]
        self.static_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        self.max_batch = self.static_batch or max_batch
        handle = create_session(self.path, config, profile, what=self.what)
        self.session = handle.session
        self.providers = handle.providers
        self.on_gpu = handle.on_gpu
        self.device_id = int(config.device_id)
        mode = config.io_binding
        self.io_binding = mode == "on" or (mode == "auto" and self.on_gpu)

    # ------------------------------------------------------------------ shapes

    def _fit_length(self, x: Any) -> Any:
        """Pad (with id 0, which follows the EOT in CLIP token ids) or check the text length of a
        static text graph."""
        if len(self.input_shape) != 2 or not isinstance(self.input_shape[1], int):
            return x
        want = int(self.input_shape[1])
        have = int(x.shape[1])
        if have == want:
            return x
        if have > want:
            raise ValueError(
                f"{self.what}: sequences of length {have} exceed the static length {want}"
            )
        if _is_torch(x):
            import torch

            return torch.nn.functional.pad(x, (0, want - have))
        return np.pad(x, ((0, 0), (0, want - have)))

    def _out_shape(self, batch: int) -> list[int]:
        return [batch, *(int(d) for d in self.output_shape[1:])]

    # ------------------------------------------------------------------ running

    def __call__(self, x: Any) -> Any:
        """Run the graph on ``x`` (any batch size).

        :returns: float32 outputs: a torch CUDA tensor when the input was one and IO binding is
            on, otherwise a numpy array.
        """
        x = self._fit_length(x)
        n = int(x.shape[0])
        if n == 0:
            return np.zeros(self._out_shape(0), np.float32)
        step = self.max_batch or n
        outs = []
        for start in range(0, n, step):
            chunk = x[start : start + step]
            rows = int(chunk.shape[0])
            if self.static_batch and rows < self.static_batch:
                chunk = _pad_rows(chunk, self.static_batch)
            out = self._run(chunk)
            outs.append(out[:rows])
        if len(outs) == 1:
            return outs[0]
        if _is_torch(outs[0]):
            import torch

            return torch.cat(outs, 0)
        return np.concatenate(outs, 0)

    def _run(self, x: Any) -> Any:
        if not self.io_binding:
            arr = _to_numpy(x, self.input_dtype)
            return self.session.run([self.output_name], {self.input_name: arr})[0]
        return self._run_bound(x)

    def _run_bound(self, x: Any) -> Any:
        """IO binding: a CUDA torch input is read in place and the output is written straight into
        a preallocated CUDA torch tensor (no host round trip); otherwise ORT copies the host input
        once and the output comes back to the host."""
        binding = self.session.io_binding()
        cuda_in = _is_torch(x) and x.device.type == "cuda"
        if cuda_in and self.on_gpu:
            import torch

            x = x.to(dtype=_torch_dtype(self.input_dtype)).contiguous()
            # ORT runs on its own CUDA stream: wait until torch's pending work on ``x`` (the
            # host-to-device copy, the cast above) is done before ORT reads it in place.
            torch.cuda.current_stream(x.device).synchronize()
            binding.bind_input(
                self.input_name,
                "cuda",
                x.device.index or 0,
                self.input_dtype,
                list(x.shape),
                x.data_ptr(),
            )
            out = torch.empty(
                self._out_shape(int(x.shape[0])), dtype=torch.float32, device=x.device
            )
            binding.bind_output(
                self.output_name,
                "cuda",
                x.device.index or 0,
                np.float32,
                list(out.shape),
                out.data_ptr(),
            )
            binding.synchronize_inputs()
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return out
        binding.bind_cpu_input(self.input_name, _to_numpy(x, self.input_dtype))
        if self.on_gpu:
            binding.bind_output(self.output_name, "cuda", self.device_id)
        else:
            binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _torch_dtype(np_dtype: Any) -> Any:
    import torch

    return {np.float32: torch.float32, np.float16: torch.float16, np.int64: torch.int64}[np_dtype]


def _to_numpy(x: Any, dtype: Any) -> np.ndarray:
    if _is_torch(x):
        x = x.detach().to("cpu").numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def _pad_rows(x: Any, rows: int) -> Any:
    """Repeat the last row up to ``rows`` rows (the padding rows' outputs are dropped)."""
    extra = rows - int(x.shape[0])
    if _is_torch(x):
        import torch

        return torch.cat([x, x[-1:].expand(extra, *x.shape[1:])], 0)
    return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)], 0)
