"""Neural-network problems on PyTorch (``pip install 'psmpi[torch]'``).

f_i(x) = mean cross-entropy of the model with parameters x over worker i's
rows, plus (weight_decay/2) ||x||^2 when ``weight_decay`` > 0 (default 0: no
weight decay).  The smoothness constant of f_i is unknown:
:meth:`NNProblem.local_smoothness` raises :class:`NoSmoothnessConstant`.

Models (``model=`` / ``--problem``):

``mlp[:H1xH2x...]``
    Flatten, then Linear+ReLU layers of widths H1, H2, ... (default one of
    128), then Linear to the classes.  ``mlp:1024x1024`` on 784 pixels has
    d = 1.86e6 parameters (for benchmarks).
``cnn``
    LeNet-style: two 5x5 convolutions (6 and 16 channels, padded) each
    followed by ReLU and 2x2 average pooling, then Linear 120, 84, classes.
    Images of at least 4 x 4 pixels (8 x 8 digits work).
``resnet18[:width=W,norm=group|batch|none]``
    CIFAR-style ResNet-18: a 3x3 stem (no max pooling), four stages of two
    basic blocks with W, 2W, 4W, 8W channels (W = 64: 11.2e6 parameters for
    10 classes), global average pooling, Linear.  Normalisation: x is the
    whole state of the model, so the default is GroupNorm (min(32, C/2)
    groups of C channels), a function of each image alone, and f_i(x) is a function of x
    and the batch only.  ``norm=batch`` is BatchNorm with statistics of the
    current batch always (no running statistics: no buffers outside x, and
    evaluation in chunks uses each chunk's statistics); ``norm=none`` drops it.
``module:factory``
    A user's model: ``factory(input_shape, n_classes)`` returns a
    ``torch.nn.Module`` mapping a float32 batch of shape (B, *input_shape)
    to (B, n_classes) logits; input_shape is the image shape (C, H, W) for
    image data, (features,) otherwise.  The Python API also takes such a
    callable or a ``torch.nn.Module`` itself (which is copied).  Its trainable
    parameters become x; buffers (e.g. BatchNorm running statistics) stay
    per process and are not communicated; it must not draw random numbers in
    forward (no dropout) for the run to be reproducible.

Flat buffer: every trainable parameter of the module is a view of one
contiguous float32 tensor, and every ``.grad`` a view of one flat gradient
tensor (:class:`FlatModel`); ``FlatModel.x`` / ``FlatModel.g`` are numpy
arrays sharing that memory.  Autograd accumulates into the gradient views in
place: there is no copy between the model and the flat vectors.  The one copy
per call is x (float64 from the methods) into the float32 buffer, skipped when
x is ``FlatModel.x`` itself; the gradient is returned as a new array of
``grad_dtype`` (float64 by default, or float32).

Determinism: :func:`configure_torch` fixes torch's thread count (1 by
default) and turns on ``torch.use_deterministic_algorithms``; the initial
parameters come from torch's generator seeded with ``seed`` alone, inside
``torch.random.fork_rng`` (the caller's torch random state is untouched), so
every rank builds the same x0; the loss and gradient are computed in chunks
of a fixed number of rows with a fixed summation order and depend on x and the
rows only, not on the process or on earlier calls.  Minibatch rows are drawn
from the numpy Generator the method passes, with replacement, as
:meth:`psmpi.problems.LogReg.stoch_grad` draws them.
"""
from __future__ import annotations

import copy
import importlib
import os
import time

import numpy as np

from ..config import ConfigError
from .base import TORCH_HINT, LocalProblem, NoSmoothnessConstant, TorchMissing

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError:
    raise TorchMissing(f"neural-network problems need PyTorch: {TORCH_HINT}") from None

CHUNK_ROWS = 1024  # rows per forward/backward pass of a full-data loss or gradient
DEFAULT_HIDDEN = (128,)


def configure_torch(threads: int = 1) -> None:
    """Fixed thread count and deterministic algorithms (process-wide)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, if CUDA is used
    if torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)


# ------------------------------------------------------------------ models ---
def _image(input_shape, model):
    if len(input_shape) != 3:
        raise ConfigError(f"the {model} model needs images (channels, height, width); the data has rows of "
                          f"shape {tuple(input_shape)}")
    return input_shape


def mlp(input_shape, n_classes, hidden=DEFAULT_HIDDEN):
    layers, width = [nn.Flatten()], int(np.prod(input_shape))
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def cnn(input_shape, n_classes):
    c, h, w = _image(input_shape, "cnn")
    if h < 4 or w < 4:
        raise ConfigError(f"the cnn model needs images of at least 4 x 4 pixels, not {h} x {w}")
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * (h // 4) * (w // 4), 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, n_classes))


def _norm(kind: str, channels: int):
    if kind == "group":
        return nn.GroupNorm(max(1, min(32, channels // 2)), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"resnet18: unknown norm '{kind}' (group, batch or none)")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with normalisation and a shortcut (a 1x1 convolution when the shape changes)."""

    def __init__(self, cin, cout, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(norm, cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(norm, cout))

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 (3x3 stem, no max pooling); ``width`` channels in the first stage."""

    def __init__(self, input_shape, n_classes, width=64, norm="group"):
        super().__init__()
        c = _image(input_shape, "resnet18")[0]
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, padding=1, bias=False), _norm(norm, width), nn.ReLU())
        blocks, cin = [], width
        for k, stride in enumerate((1, 2, 2, 2)):
            cout = width << k
            blocks += [BasicBlock(cin, cout, stride, norm), BasicBlock(cout, cout, 1, norm)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, n_classes)

    def forward(self, x):
        # mean over the pixels rather than AdaptiveAvgPool2d, whose CUDA backward is not deterministic
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def _options(spec: str, name: str, body: str, allowed: dict) -> dict:
    opts = {}
    for item in filter(None, body.split(",")):
        k, eq, v = item.partition("=")
        k = k.strip()
        if not eq or k not in allowed:
            raise ConfigError(f"bad option {item!r} in '{spec}'; {name} takes {', '.join(allowed)}")
        try:
            opts[k] = allowed[k](v.strip())
        except ValueError:
            raise ConfigError(f"bad value in '{spec}': {item!r}") from None
    return opts


def _hidden(spec: str, body: str):
    try:
        sizes = tuple(int(h) for h in body.lower().split("x")) if body else DEFAULT_HIDDEN
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"bad mlp sizes in '{spec}': give hidden widths as mlp:H1xH2x... (e.g. mlp:512x512)")
    return sizes


def _user_factory(spec: str):
    import sys

    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # a module beside the run, as `python -m` would find it
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"model '{spec}': cannot import module '{mod_name}' ({e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model '{spec}': module '{mod_name}' has no '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model '{spec}': '{attr}' is not callable")
    return obj


def make_module(model, input_shape, n_classes: int):
    """The torch module for ``model``: a spec string (see the module docstring), a
    factory ``f(input_shape, n_classes)`` or a ``torch.nn.Module`` (copied)."""
    input_shape = tuple(int(v) for v in input_shape)
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    if callable(model):
        factory, what = model, getattr(model, "__name__", "factory")
    else:
        spec = str(model)
        name, _, body = spec.partition(":")
        if name == "mlp":
            return mlp(input_shape, n_classes, _hidden(spec, body))
        if name == "cnn":
            _options(spec, name, body, {})
            return cnn(input_shape, n_classes)
        if name == "resnet18":
            return ResNet18(input_shape, n_classes, **_options(spec, name, body, {"width": int, "norm": str}))
        if not body:
            raise ConfigError(f"unknown model '{spec}': use mlp, cnn, resnet18 or module:factory")
        factory, what = _user_factory(spec), spec
    module = factory(input_shape, n_classes)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model '{what}' returned {type(module).__name__}, not a torch.nn.Module")
    return module


# ------------------------------------------------------------- flat model ---
class FlatModel:
    """A torch module whose trainable parameters are views of one flat float32 tensor.

    ``x`` (float32, length ``dim``) is the parameter vector and ``g`` the
    gradient vector, arrays of the model's device that share memory with the
    module: numpy arrays on the host, CuPy views of the torch CUDA tensors
    through DLPack on a GPU (:meth:`on`).  ``x0`` is a copy of the initial
    parameters (float32, on the host), a function of ``seed`` only.
    ``blocks`` holds each parameter's ``(offset, shape)`` in x, in order.

    The module may hold no buffers (BatchNorm's running statistics, ...): they
    would be state outside x, updated by every gradient in whichever process
    computes it, so the serial and MPI runs would differ.
    """

    def __init__(self, model, input_shape, n_classes: int, seed: int = 0, threads: int = 1):
        configure_torch(threads)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.n_classes = int(n_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            module = make_module(model, self.input_shape, self.n_classes)
        if next(module.buffers(), None) is not None:
            names = ", ".join(n for n, _ in module.named_buffers())
            raise ConfigError(f"model {model}: its buffers ({names}) are state outside the parameter vector; "
                              f"use layers without them (e.g. BatchNorm with track_running_stats=False)")
        self._bind(module.float(), None)
        self.x0 = self.x.copy()

    def _bind(self, module, device) -> None:
        """Make ``module``'s trainable parameters and gradients views of two flat tensors on
        ``device`` (None: the host), exposed as ``x`` and ``g`` (numpy, or ``device``'s arrays)."""
        self.module, self.device = module, device
        where = "cpu" if device is None else device.torch_device
        params = [p for p in module.parameters() if p.requires_grad]
        self.dim = sum(p.numel() for p in params)
        self.flat = torch.empty(self.dim, dtype=torch.float32, device=where)
        self.flat_grad = torch.zeros(self.dim, dtype=torch.float32, device=where)
        off, blocks = 0, []
        for p in params:
            n = p.numel()
            blocks.append((off, tuple(p.shape)))
            view = self.flat[off:off + n].view_as(p)
            view.copy_(p.detach())
            p.data = view
            p.grad = self.flat_grad[off:off + n].view_as(p)
            off += n
        self.blocks = tuple(blocks)
        view = (lambda t: t.numpy()) if device is None else device.from_torch
        self.x, self.g = view(self.flat), view(self.flat_grad)
        self._copies = {}
        self.last_forward_backward = 0.0  # seconds of the last loss_grad's forward and backward passes

    def on(self, device) -> "FlatModel":
        """This model on ``device`` (a :class:`psmpi.backend.Device`): itself on the host;
        else one copy per device, shared by every problem of this process that asks (the
        workers one process hosts hold the model once), its parameters as they are now."""
        if device is None or device.on_host:
            return self
        if device.name not in self._copies:
            where = device.torch_device
            if where.startswith("cuda") and not torch.cuda.is_available():
                raise RuntimeError("a neural network on the GPU needs a CUDA build of torch "
                                   "(torch.cuda.is_available() is False)")
            twin = copy.copy(self)
            twin._bind(copy.deepcopy(self.module).to(where), device)
            self._copies[device.name] = twin
        return self._copies[device.name]

    def tensor(self, a, dtype=None):
        """A host array (data rows, labels, row indices) as a torch tensor on this model's
        device; on the host it shares the array's memory."""
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))
        return t if self.device is None else t.to(self.device.torch_device)

    def load(self, x) -> None:
        """Set the parameters to ``x`` (rounded to float32); nothing to do when x is ``self.x``."""
        if x is self.x:
            return
        if np.shape(x) != (self.dim,):
            raise ValueError(f"parameter vector of shape {np.shape(x)}; this model has {self.dim} parameters")
        if self.device is None:
            np.copyto(self.x, x, casting="same_kind")
        else:
            self.x[...] = x  # on the device: a cast into the flat buffer through its view

    def _batches(self, X, y, chunk: int):
        """Chunks of (rows as images, labels); X and y are host arrays or this model's tensors."""
        for a in range(0, len(X), chunk):
            xb, yb = X[a:a + chunk], y[a:a + chunk]
            if not isinstance(xb, torch.Tensor):
                xb, yb = self.tensor(xb, np.float32), self.tensor(yb, np.int64)
            yield xb.view(-1, *self.input_shape), yb

    def _forward(self, xb):
        """The module on a batch; what the module refuses (e.g. BatchNorm on one value per
        channel: a batch of 1 whose feature maps shrank to 1 x 1) is one line for the user."""
        try:
            return self.module(xb)
        except (ValueError, RuntimeError) as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"the model cannot run on a batch of shape {tuple(xb.shape)}: {why}") from None

    def loss_grad(self, X, y, chunk: int = CHUNK_ROWS) -> tuple[float, int]:
        """(mean cross-entropy over the rows of X (labels y), rows classified right);
        the gradient lands in ``g``."""
        m = len(X)
        if m == 0:
            raise ValueError("loss over no rows")
        self.module.train()
        self.flat_grad.zero_()
        total, right = 0.0, 0
        t0 = time.perf_counter()
        for xb, yb in self._batches(X, y, chunk):
            out = self._forward(xb)
            loss = F.cross_entropy(out, yb, reduction="sum")
            loss.backward()
            total += float(loss.detach())
            right += int((out.detach().argmax(dim=1) == yb).sum())
        self.last_forward_backward = time.perf_counter() - t0  # the passes alone, for the bench's phase split
        self.flat_grad.mul_(1.0 / m)
        return total / m, right

    def evaluate(self, x, X, y, chunk: int = CHUNK_ROWS) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of parameters x on rows X with labels y (eval mode, no gradient)."""
        self.load(x)
        m = len(X)
        if m == 0:
            raise ValueError("evaluation over no rows")
        self.module.eval()
        total, right = 0.0, 0
        with torch.no_grad():
            for xb, yb in self._batches(X, y, chunk):
                out = self._forward(xb)
                total += float(F.cross_entropy(out, yb, reduction="sum"))
                right += int((out.argmax(dim=1) == yb).sum())
        return total / m, right / m

    def loss(self, x, X, y, chunk: int = CHUNK_ROWS) -> float:
        return self.evaluate(x, X, y, chunk)[0]

    def accuracy(self, x, X, y, chunk: int = CHUNK_ROWS) -> float:
        return self.evaluate(x, X, y, chunk)[1]


# ----------------------------------------------------------------- problem ---
class NNProblem(LocalProblem):
    """f_i on one worker's shard: rows ``X`` (float32, rows x prod(input_shape)),
    class indices ``y`` in [0, n_classes).

    ``model`` is a spec string, a factory or a module (see the module
    docstring), or a :class:`FlatModel` to share (the serial runtime can give
    all its simulated workers one model: every call loads x first, so sharing
    is safe as long as the calls do not run at the same time).
    """

    def __init__(self, X, y, input_shape, n_classes: int, model="mlp", seed: int = 0, *,
                 weight_decay: float = 0.0, grad_dtype=np.float64, chunk_rows: int = CHUNK_ROWS, threads: int = 1):
        self.input_shape = tuple(int(v) for v in input_shape)
        self.X = np.ascontiguousarray(X, dtype=np.float32).reshape(len(X), -1)
        self.y = np.ascontiguousarray(y, dtype=np.int64)
        self.rows = len(self.X)
        if self.X.shape[1] != int(np.prod(self.input_shape)):
            raise ValueError(f"rows of {self.X.shape[1]} features for inputs of shape {self.input_shape}")
        if len(self.y) != self.rows or (self.rows and (self.y.min() < 0 or self.y.max() >= n_classes)):
            raise ValueError(f"need {self.rows} labels in [0, {n_classes})")
        if isinstance(model, FlatModel):
            if model.input_shape != self.input_shape or model.n_classes != int(n_classes):
                raise ValueError("the shared FlatModel was built for other inputs or classes")
            self.model = model
        else:
            self.model = FlatModel(model, self.input_shape, n_classes, seed, threads)
        self.dim = self.model.dim
        self.param_blocks = self.model.blocks
        self.weight_decay = float(weight_decay)
        self.reg_curvature = self.weight_decay
        self.grad_dtype = np.dtype(grad_dtype)
        self.chunk_rows = int(chunk_rows)
        self.name = model if isinstance(model, str) else type(self.model.module).__name__
        self._X, self._y = self.X, self.y  # the rows the gradients read: host arrays, or the device's tensors
        self.forward_backward_seconds = 0.0  # in the model's forward and backward passes alone (psmpi bench round)

    def to_device(self, dev):
        """A copy on ``dev`` (``--device gpu``): the model's copy on the device (one per process,
        :meth:`FlatModel.on`) and the rows as torch tensors there; the gradients are then arrays
        of ``dev`` read from the flat gradient through its view, and x is written into the flat
        parameters through theirs."""
        out = copy.copy(self)
        out.model = self.model.on(dev)
        out._X, out._y = out.model.tensor(self.X), out.model.tensor(self.y)
        return out

    def subset(self, rows):
        """This problem on some of its rows (local indices), sharing the model."""
        return NNProblem(self.X[rows], self.y[rows], self.input_shape, self.model.n_classes, self.model,
                         weight_decay=self.weight_decay, grad_dtype=self.grad_dtype, chunk_rows=self.chunk_rows)

    def initial_x(self) -> np.ndarray:
        """The seeded initial parameters (float64), the same on every rank."""
        return self.model.x0.astype(np.float64)

    def _loss_grad(self, x, X, y):
        """(f, rows right, gradient) on the rows X."""
        self.model.load(x)
        loss, right = self.model.loss_grad(X, y, self.chunk_rows)
        self.forward_backward_seconds += self.model.last_forward_backward
        if self.weight_decay:
            self.model.flat_grad.add_(self.model.flat, alpha=self.weight_decay)
            w = self.model.x.astype(np.float64)
            loss += 0.5 * self.weight_decay * float(w @ w)
        return loss, right, self.model.g.astype(self.grad_dtype)

    def value_and_grad(self, x):
        loss, _, g = self._loss_grad(x, self._X, self._y)
        return loss, g

    def grad_aux(self, x):
        """The gradient, and (f, rows right) from the same forward pass."""
        loss, right, g = self._loss_grad(x, self._X, self._y)
        return g, (loss, right)

    def value_from(self, x, aux):
        return aux[0]

    def batch_grad(self, x, idx):
        """The gradient on the rows ``idx`` (host indices; LocalProblem.minibatch draws them with
        replacement)."""
        if self._X is not self.X:  # rows on the device: gather them there
            idx = self.model.tensor(idx, np.int64)
        return self._loss_grad(x, self._X[idx], self._y[idx])[2]

    def loss(self, x, X, y) -> float:
        """Mean cross-entropy (no weight decay) of x on other rows, e.g. a test set."""
        return self.model.loss(x, X, y, self.chunk_rows)

    def accuracy(self, x, X, y) -> float:
        return self.model.accuracy(x, X, y, self.chunk_rows)

    def correct(self, x, aux=None) -> int:
        """Rows classified right: counted in the forward pass of the evaluation's gradient
        (``aux``, the same as in eval mode for models without dropout), else on its own."""
        if aux is not None:
            return aux[1]
        return int(round(self.model.accuracy(x, self.X, self.y, self.chunk_rows) * self.rows))

    def score(self, x) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) on this shard, without a gradient."""
        return self.model.evaluate(x, self.X, self.y, self.chunk_rows)

    def _no_constant(self, *_):
        raise NoSmoothnessConstant(f"no smoothness constant L is known for the neural network {self.name}: "
                                   f"pass the step size with --gamma")

    hbound_dim = hbound_matvec = hbound_dense = local_smoothness = _no_constant
