"""The Model base: a named graph of layers with forward, init, summary, parameter and multiply counts,
a layer-by-layer check against fastconv.reference, .npz save / load, batch-norm folding and
PyTorch-style state dicts."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .. import _backend, _compare
from . import _layers


def _device_of(x) -> str:
    return "cuda" if _backend._on_gpu(x) else "cpu"


class _Run:
    """Executes a graph with an ops namespace (fastconv or fastconv.reference)."""

    def __init__(self, F, device="cpu", record=None):
        self.F, self.device, self.record = F, device, record

    def call(self, layer, *xs):
        if isinstance(layer, _layers.Block):
            return layer.forward(self, *xs)
        y = layer.compute(self.F, layer.device_params(self.device), *xs)
        if self.record is not None:
            self.record.append((layer, xs, y))
        return y


class _Shapes:
    """Runs the graph on shapes only: one row per leaf, nothing computed."""

    def __init__(self):
        self.rows = []

    def call(self, layer, *shapes):
        if isinstance(layer, _layers.Block):
            return layer.forward(self, *shapes)
        out = tuple(int(d) for d in layer.infer(*shapes))
        self.rows.append(LayerRow(layer.name, layer.kind, layer.describe(), out, layer.num_parameters(True),
                                  layer.num_parameters(False), int(layer.macs(out, *shapes))))
        return out


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    details: str
    output_shape: tuple
    parameters_with_statistics: int
    trainable_parameters: int
    macs: int


@dataclass
class CheckReport:
    """Result of Model.check: the worst per-layer relative error against the reference and where."""

    model: str
    worst_error: float
    worst_layer: str
    worst_index: tuple
    worst_tolerance: float
    end_to_end_error: float
    layers: list = field(default_factory=list)  # (name, kind, error, tolerance)

    def __str__(self):
        return (f"{self.model}: {len(self.layers)} layers checked against fastconv.reference; worst relative error "
                f"{self.worst_error:.3g} (tolerance {self.worst_tolerance:.3g}) in {self.worst_layer} at "
                f"{self.worst_index}; end to end {self.end_to_end_error:.3g}")


class Model:
    """A network built from fastconv's public ops. Input NHWC float (NumPy -> CPU, CuPy -> GPU)."""

    def __init__(self, name, body, input_shape, num_classes, count_statistics=False):
        self.name = name
        self.body = body
        self.input_shape = tuple(input_shape)  # (H, W, C) at the standard resolution
        self.num_classes = num_classes
        self.count_statistics = count_statistics  # Keras counts batch-norm mean / var as parameters
        self.folded = False

    # -------------------------------------------------------------------------------- graph
    def layers(self):
        """The leaves in execution order (depth first)."""
        def walk(node):
            if isinstance(node, _layers.Block):
                for child in node.children:
                    yield from walk(child)
            else:
                yield node
        return list(walk(self.body))

    def __getitem__(self, name):
        for layer in self.layers():
            if layer.name == name:
                return layer
        raise KeyError(f"{self.name}: no layer named {name!r}")

    # -------------------------------------------------------------------------------- running
    def forward(self, x):
        """x (N, H, W, C) NumPy or CuPy -> class scores (N, num_classes) on the same device."""
        return _Run(_fastconv(), _device_of(x)).call(self.body, x)

    __call__ = forward

    def init(self, seed=0):
        """He-normal weights (std sqrt(2 / fan_in)), small random biases and batch-norm statistics."""
        rng = np.random.default_rng(seed)
        for layer in self.layers():
            layer.init(rng)
        return self

    # -------------------------------------------------------------------------------- counting
    def _input(self, input_shape, batch):
        shape = self.input_shape if input_shape is None else tuple(input_shape)
        return (batch,) + shape if len(shape) == 3 else shape

    def layer_table(self, input_shape=None, batch=1) -> list[LayerRow]:
        """One row per layer from shape inference alone (nothing is computed)."""
        shapes = _Shapes()
        shapes.call(self.body, self._input(input_shape, batch))
        return shapes.rows

    def output_shape(self, input_shape=None, batch=1) -> tuple:
        return self.layer_table(input_shape, batch)[-1].output_shape

    def num_parameters(self, statistics=None) -> int:
        """Parameter count. Batch-norm running statistics count only for Keras-derived models
        (count_statistics), as Keras' summary counts them; pass statistics=True / False to choose."""
        statistics = self.count_statistics if statistics is None else statistics
        return sum(layer.num_parameters(statistics) for layer in self.layers())

    def macs(self, input_shape=None, batch=1) -> int:
        """Multiplies (= multiply-adds) of convolutions and dense layers: output elements x filter volume."""
        return sum(row.macs for row in self.layer_table(input_shape, batch))

    def summary(self, input_shape=None, batch=1, print_fn=None) -> str:
        rows = self.layer_table(input_shape, batch)
        stats = self.count_statistics
        params = [r.parameters_with_statistics if stats else r.trainable_parameters for r in rows]
        lines = [f'Model "{self.name}"  input {self._input(input_shape, batch)}',
                 f"{'#':>4}  {'layer':<34} {'type':<18} {'output shape':<22} {'params':>12} {'multiplies':>16}"]
        lines.append("-" * len(lines[-1]))
        for i, (row, p) in enumerate(zip(rows, params)):
            kind = row.kind + (f" {row.details}" if row.details else "")
            lines.append(f"{i:>4}  {row.name:<34.34} {kind:<18.18} {str(row.output_shape):<22} {p:>12,} {row.macs:>16,}")
        lines.append("-" * len(lines[1]))
        lines.append(f"Total parameters: {sum(params):,}" + (" (batch-norm statistics included)" if stats else ""))
        if stats:
            trainable = sum(r.trainable_parameters for r in rows)
            lines.append(f"Trainable: {trainable:,}   Non-trainable: {sum(params) - trainable:,}")
        lines.append(f"Total multiplies: {sum(r.macs for r in rows):,}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    # -------------------------------------------------------------------------------- checking
    def check(self, x=None, rtol=None, seed=0):
        """Run the same weights through fastconv.reference (float64) and fastconv, layer by layer.

        Each layer gets the reference's input (rounded to float32) and is compared with the reference's
        output under _compare's rule (rtol=None: the tolerance grows with the layer's reduction length)
        or a fixed rtol. Returns a CheckReport whose worst_* fields name the layer with the largest error
        relative to its tolerance; raises AssertionError naming every failing layer on a mismatch.
        x: NumPy (checked on the CPU) or CuPy (on the GPU); default one random image at input_shape.
        """
        from .. import reference

        if x is None:
            x = np.random.default_rng(seed).standard_normal(self._input(None, 1)).astype(np.float32)
        device = _device_of(x)
        x_host = _to_host(x)
        record = []
        want = _Run(reference, "host", record).call(self.body, x_host.astype(np.float64))
        run = _Run(_fastconv(), device)
        rows, worst = [], (-1.0, "", (), 0.0)
        for layer, xs, y in record:
            got = run.call(layer, *[_to_device(np.asarray(a, np.float32), device) for a in xs])
            got = _to_host(got)
            if got.shape != y.shape:
                raise AssertionError(f"{self.name}: layer {layer.name}: shape {got.shape} != reference {y.shape}")
            err, where = _compare.max_relative_error(got, y)
            tol = _compare.tolerance(layer.terms(*[a.shape for a in xs])) if rtol is None else rtol
            rows.append((layer.name, layer.kind, err, tol))
            if err / tol > worst[0] / max(worst[3], 1e-300) or not worst[1]:
                worst = (err, layer.name, where, tol)
        end = _compare.max_relative_error(_to_host(self.forward(x)), want)[0]
        report = CheckReport(self.name, worst[0], worst[1], worst[2], worst[3], end, rows)
        bad = [r for r in rows if not r[2] <= r[3]]
        if bad:
            listing = "; ".join(f"{n} ({k}): {e:.3g} > {t:.3g}" for n, k, e, t in bad[:5])
            raise AssertionError(f"{self.name}: {len(bad)} layer(s) differ from fastconv.reference: {listing}")
        return report

    # -------------------------------------------------------------------------------- weights
    def state(self) -> dict:
        """name.param -> float32 array, every weight of every layer."""
        return {f"{layer.name}.{k}": v for layer in self.layers() for k, v in layer.params.items()}

    def save(self, path) -> None:
        np.savez(path, **self.state())

    def load(self, path):
        with np.load(path) as data:
            self.load_state(dict(data))
        return self

    def load_state(self, state: dict):
        mine = self.state()
        missing = sorted(set(mine) - set(state))
        extra = sorted(set(state) - set(mine))
        if missing or extra:
            raise ValueError(f"{self.name}: weights do not match the model: missing {missing[:5]}, unexpected "
                             f"{extra[:5]} (weights saved after fold_batch_norm() load only into a folded model)")
        for layer in self.layers():
            layer.set_params(**{k: state[f"{layer.name}.{k}"] for k in layer.params})
        return self

    def fold_batch_norm(self) -> Model:
        """A copy with every batch norm folded into the convolution before it (inference form):
        w' = w * gamma / sqrt(var + eps) per output channel, b' = (b - mean) * gamma / sqrt(var + eps) + beta."""
        folded = copy.deepcopy(self)
        _layers.fold_batch_norm(folded.body)
        folded.folded = True
        return folded

    def state_dict(self) -> dict:
        """PyTorch-style state dict (torchvision's key names, OIHW convolutions, (out, in) linears)."""
        if self.folded:
            raise ValueError(f"{self.name}: state_dict of a batch-norm-folded model has no PyTorch counterpart")
        out = {}
        for layer in self.layers():
            out.update(layer.to_torch())
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Load a PyTorch / torchvision-style state dict (names -> arrays or tensors), converting
        OIHW -> HWIO, (out, in) -> (in, out) and PyTorch's (C, H, W) flattening to NHWC's."""
        if self.folded:
            raise ValueError(f"{self.name}: load the state dict before fold_batch_norm()")
        sd = {k: _to_numpy(v) for k, v in state_dict.items()}
        used = set()

        def get(key):
            if key not in sd:
                raise KeyError(f"{self.name}: state dict has no {key!r}")
            used.add(key)
            return sd[key]

        for layer in self.layers():
            layer.from_torch(get)
        unused = sorted(k for k in set(sd) - used if not k.endswith("num_batches_tracked"))
        if strict and unused:
            raise KeyError(f"{self.name}: state dict entries not used by the model: {unused[:8]}")
        return self


def _fastconv():
    import fastconv

    return fastconv


def _to_numpy(v):
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _to_host(a):
    if _backend._on_gpu(a):
        import cupy

        return cupy.asnumpy(a)
    return np.asarray(a)


def _to_device(a, device):
    if device == "cpu":
        return a
    import cupy

    return cupy.asarray(a)
