"""Values crossing from the sandbox (untrusted) to the checker (trusted) as plain data.

The sandbox *encodes* what a student's function returned into JSON plus blob files (``.npy``
arrays, ``.keras`` models) in its working folder. The checker *decodes* them with strict rules:
no pickle, arrays without objects, Keras models only made of Keras' own layers (no ``Lambda``,
no custom classes), figures rebuilt by the checker from their images, lines and titles. So the
checker only ever holds values of plain types it built itself: an object whose ``__eq__``
always says True, an ndarray subclass or a patched numpy cannot cross.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import stat
import zipfile
from pathlib import Path

import numpy as np

MAX_ITEMS = 100_000  # containers, all levels together
MAX_DEPTH = 20
MAX_BLOB_BYTES = 256 * 1024 * 1024
#: All the files one value may be made of, together (read before anything is decoded).
MAX_VALUE_BYTES = 1024 * 1024 * 1024
_read_bytes = [0]  # what the value being decoded has read so far (the checker decodes one at a time)
_BLOB_NAME = re.compile(r"\d{1,3}_\d{1,7}\.(npy|keras)")
_SAFE_EXCEPTIONS = {
    name
    for name, obj in vars(__import__("builtins")).items()
    if isinstance(obj, type) and issubclass(obj, Exception)
}
_KERAS_BANNED = {"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}


class Unsupported(Exception):
    """A value the grader cannot compare (raised in the checker where the test uses it)."""


class SubmissionError(Exception):
    """The student's code ended, hung or misbehaved while a check ran (a reason, not a crash)."""


# ----------------------------------------------------------------------------- encoding (sandbox)
class Encoder:
    """Encode return values into JSON-able dicts, writing large parts to ``blob_dir``."""

    def __init__(self, blob_dir: str | os.PathLike, prefix: int = 0, models: dict | None = None,
                 model_cache: Path | None = None):
        self.blob_dir, self.prefix = Path(blob_dir), prefix
        self.blob_dir.mkdir(exist_ok=True)
        # the checker sends the same set-up models to every sandbox: saved once, copied after
        self.models, self.model_cache = models, model_cache
        self.count = 0
        self.items = 0

    def _blob(self, ext: str) -> tuple[str, Path]:
        self.count += 1
        name = f"{self.prefix}_{self.count}.{ext}"
        return name, self.blob_dir / name

    def array(self, value) -> dict:
        arr = np.asarray(value)
        if arr.dtype.hasobject or arr.dtype.kind not in "biufcSUM?":
            return unsupported(value, f"an array of dtype {arr.dtype}")
        name, path = self._blob("npy")
        with open(path, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        return {"t": "array", "blob": name}

    def encode(self, value, depth: int = 0) -> dict:
        self.items += 1
        if self.items > MAX_ITEMS or depth > MAX_DEPTH:
            return unsupported(value, f"a structure larger than {MAX_ITEMS} items or {MAX_DEPTH} levels")
        if value is None or type(value) is bool:
            return {"t": "py", "v": value}
        if isinstance(value, (bool, np.bool_)):
            return {"t": "py", "v": bool(value)}
        if isinstance(value, int) and not isinstance(value, np.generic):
            return {"t": "int", "v": str(int(value))}
        if isinstance(value, float) and not isinstance(value, np.generic):
            return {"t": "float", "v": repr(float(value))}
        if isinstance(value, str):
            return {"t": "py", "v": str.__str__(value)}
        if isinstance(value, (bytes, bytearray)):
            return {"t": "bytes", "v": base64.b64encode(bytes(value)).decode()}
        if isinstance(value, complex):
            return {"t": "complex", "v": [repr(value.real), repr(value.imag)]}
        if isinstance(value, np.generic):
            out = self.array(value)
            return {**out, "t": "scalar"} if out["t"] == "array" else out
        if isinstance(value, np.ndarray):
            return self.array(value)
        if isinstance(value, (list, tuple, set, frozenset)):
            kind = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}
            base = next(b for b in (list, tuple, set, frozenset) if isinstance(value, b))
            return {"t": kind[base], "v": [self.encode(v, depth + 1) for v in list(value)]}
        if isinstance(value, dict):
            return {"t": "dict", "v": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in list(value.items())]}
        module = type(value).__module__ or ""
        if module.startswith("tensorflow") and hasattr(value, "numpy") and hasattr(value, "dtype"):
            out = self.array(value.numpy())
            return {**out, "t": "tensor"} if out["t"] == "array" else out
        if module.startswith("matplotlib") and type(value).__name__ in ("Figure", "SubFigure"):
            return self.figure(value)
        if module.startswith("keras") and hasattr(value, "save") and hasattr(value, "layers"):
            return self.model(value)
        return unsupported(value)

    def figure(self, fig) -> dict:
        axes = []
        for ax in fig.axes:
            images = []
            for im in ax.get_images():
                data = im.get_array()
                data = np.ma.filled(data.astype(float), np.nan) if np.ma.isMaskedArray(data) else data
                images.append({"data": self.array(data), "cmap": im.get_cmap().name, "clim": [float(v) for v in im.get_clim()]})
            lines = [{"x": self.array(np.asarray(l.get_xdata(), dtype=float)), "y": self.array(np.asarray(l.get_ydata(), dtype=float))} for l in ax.get_lines()]
            spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
            grid = [*spec.get_gridspec().get_geometry(), spec.num1, spec.num2] if spec is not None else None
            axes.append({
                "grid": [int(v) for v in grid] if grid else None,
                "bounds": [float(v) for v in ax.get_position().bounds],
                "visible": bool(ax.get_visible()),
                "axison": bool(ax.axison),
                "title": ax.get_title(),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
                "texts": [t.get_text() for t in ax.texts],
                "images": images,
                "lines": lines,
            })
        suptitle = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
        size = [float(v) for v in fig.get_size_inches()]
        return {"t": "figure", "figsize": size, "dpi": float(fig.dpi), "suptitle": suptitle, "axes": axes}

    def model(self, model) -> dict:
        import shutil

        name, path = self._blob("keras")
        try:
            if self.models is None:
                model.save(path)
            else:
                if id(model) not in self.models:
                    saved = self.model_cache / f"{len(self.models)}.keras"
                    model.save(saved)
                    self.models[id(model)] = (model, saved)  # holds the model: its id stays unique
                shutil.copyfile(self.models[id(model)][1], path)
        except Exception as exc:
            return unsupported(model, f"a Keras model that cannot be saved ({type(exc).__name__}: {exc})")
        return {"t": "keras", "blob": name}


def fingerprint(value) -> str:
    """A short description of a call argument, equal in the sandbox and the checker for equal inputs.

    Arrays are hashed (all bytes up to 1 MB, a strided sample beyond); other values by type
    and, for numbers and strings, value. Used to notice when the checker's inputs differ from
    the sandbox's (a function that changed shared state such as a random generator).
    """
    import hashlib

    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        flat = value.reshape(-1)
        if flat.nbytes > 2**20:
            flat = flat[:: max(1, flat.size // 65536)]
        digest = hashlib.blake2b(np.ascontiguousarray(flat).tobytes(), digest_size=8).hexdigest()
        return f"array{value.shape}{value.dtype}:{digest}"
    if isinstance(value, (bool, int, float, str)) or value is None:
        return f"{type(value).__name__}:{str(value)[:100]}"
    if isinstance(value, (list, tuple)) and len(value) <= 20:
        return f"{type(value).__name__}[" + ",".join(fingerprint(v) for v in value) + "]"
    return type(value).__name__


def shared_layers(model, args: tuple, kwargs: dict) -> dict:
    """Layers of a returned Keras model that *are* layers of a model passed as an argument.

    Returns:
        ``{layer name in the returned model: [argument position or keyword, layer name there]}``.
    """
    def layers(m):
        for layer in getattr(m, "layers", []):
            yield layer
            yield from layers(layer)

    owners = {}
    for where, arg in [*enumerate(args), *kwargs.items()]:
        if hasattr(arg, "layers") and hasattr(arg, "get_layer"):
            for layer in layers(arg):
                owners.setdefault(id(layer), [where, layer.name])
    return {layer.name: owners[id(layer)] for layer in layers(model) if id(layer) in owners}


def unsupported(value, what: str | None = None) -> dict:
    kind = type(value)
    return {"t": "unsupported", "type": f"{kind.__module__}.{kind.__qualname__}", "what": what or ""}


def encode_exception(exc: BaseException) -> dict:
    """An exception raised by student code, as data (type name, builtin bases, message)."""
    kind = type(exc)
    bases = [k.__name__ for k in kind.__mro__ if k.__module__ == "builtins" and k.__name__ in _SAFE_EXCEPTIONS]
    try:
        message = str(exc)
    except Exception:
        message = "<the exception's message could not be shown>"
    return {"type": kind.__name__, "module": kind.__module__, "bases": bases[:1], "message": message[:2000]}


# ----------------------------------------------------------------------------- decoding (checker)
def _open_blob(blob_dir: Path, name) -> bytes:
    """The bytes of one blob, read without following links (the folder is the sandbox's)."""
    if not isinstance(name, str) or not _BLOB_NAME.fullmatch(name):
        raise Unsupported(f"malformed result (blob name {name!r})")
    try:
        folder = os.open(blob_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise Unsupported(f"malformed result (no blob folder for {name})") from None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        raise Unsupported(f"malformed result (blob {name} cannot be opened)") from None
    finally:
        os.close(folder)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BLOB_BYTES:
            raise Unsupported(f"malformed result (blob {name} is not a regular file of at most {MAX_BLOB_BYTES} bytes)")
        _read_bytes[0] += info.st_size
        if _read_bytes[0] > MAX_VALUE_BYTES:
            raise Unsupported(f"a value made of more than {MAX_VALUE_BYTES // 2**20} MB of data")
        return f.read(MAX_BLOB_BYTES + 1)


def _array(blob_dir: Path, name) -> np.ndarray:
    """An array from a ``.npy`` blob; its header must match the file's size before anything is allocated."""
    data = _open_blob(blob_dir, name)
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = header(stream)
        if dtype.hasobject:
            raise ValueError("object arrays are not accepted")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count < 0 or count * dtype.itemsize != len(data) - stream.tell():
            raise ValueError(f"its header declares {shape} {dtype}, which does not match the file's {len(data)} bytes")
        stream.seek(0)
        return np.load(stream, allow_pickle=False)
    except Exception as exc:
        raise Unsupported(f"malformed result (array {name}: {exc})") from None


def model_digest(blob_dir: Path, name) -> str:
    """sha256 of a ``.keras`` blob (to load each distinct model once)."""
    import hashlib

    return hashlib.sha256(_open_blob(blob_dir, name)).hexdigest()


#: A declared size (units, filters, shape dimension, ...) above this is refused before building.
MAX_DECLARED_SIZE = 65_536
_SIZE_KEYS = {"units", "filters", "input_dim", "output_dim", "batch_shape", "shape", "batch_input_shape",
              "kernel_size", "target_shape", "dims", "depth_multiplier", "num_heads", "key_dim"}


def _declared_sizes(value):
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _declared_sizes(v)


def _check_keras_config(config) -> None:
    if isinstance(config, dict):
        for key in sorted(_SIZE_KEYS & set(config)):
            big = [v for v in _declared_sizes(config[key]) if v > MAX_DECLARED_SIZE]
            if big:
                raise Unsupported(
                    f"a Keras model declaring {key}={big[0]:,}, far larger than any model of this course "
                    f"(at most {MAX_DECLARED_SIZE:,}): it was not built"
                )
        cls, module = config.get("class_name"), config.get("module")
        if isinstance(cls, str) and "config" in config:
            if cls in _KERAS_BANNED or (module is not None and not str(module).startswith("keras")):
                raise Unsupported(
                    f"a Keras model with layer {cls} from module {module}: the grader only checks "
                    "models made of Keras' own layers (no Lambda, no custom classes)"
                )
            registered = config.get("registered_name")
            if registered not in (None, cls) and not str(registered).startswith("keras"):
                raise Unsupported(f"a Keras model with the custom object {registered}")
        for v in config.values():
            _check_keras_config(v)
    elif isinstance(config, list):
        for v in config:
            _check_keras_config(v)


def _keras(blob_dir: Path, name, shared=None, args=((), {})):
    import keras

    data = _open_blob(blob_dir, name)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if sum(i.file_size for i in z.infolist()) > 4 * MAX_BLOB_BYTES:
                raise Unsupported("a Keras model file that unpacks to more than 1 GB")
            info = z.getinfo("config.json")
            if info.file_size > 10 * 2**20:
                raise Unsupported("a Keras model whose config is larger than 10 MB")
            _check_keras_config(json.loads(z.read("config.json")))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise Unsupported(f"malformed result (Keras model {name}: {exc})") from None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="grader-model-") as private:  # loaded from our own copy
        path = Path(private) / "model.keras"
        path.write_bytes(data)
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:
            raise Unsupported(f"a Keras model that could not be loaded back ({type(exc).__name__}: {exc})") from None
    if not shared:
        return model
    # The student's model used layers of a model it was given: use the checker's own layers
    # (identical weights), so that "shares the trained layer" checks see the same objects.
    positional, keywords = args
    mine = {}
    for new_name, (where, old_name) in dict(shared).items():
        owner = positional[where] if isinstance(where, int) and where < len(positional) else keywords.get(where)
        try:
            mine[str(new_name)] = owner.get_layer(str(old_name))
        except Exception:
            continue
    try:
        return keras.models.clone_model(model, clone_function=lambda layer: mine.get(layer.name, layer))
    except Exception:
        return model


def _figure(blob_dir: Path, spec: dict):
    import matplotlib
    from matplotlib.figure import Figure

    figsize = [min(max(float(v), 0.1), 100.0) for v in spec["figsize"]][:2]
    fig = Figure(figsize=figsize, dpi=min(max(float(spec["dpi"]), 10.0), 1000.0))
    if spec.get("suptitle"):
        fig.suptitle(str(spec["suptitle"]))
    from matplotlib.gridspec import SubplotSpec

    grids = {}
    for ax_spec in spec["axes"][:1000]:
        grid = ax_spec.get("grid")
        if grid:
            nrows, ncols, num1, num2 = (int(v) for v in grid)
            if not (0 < nrows * ncols <= 10_000 and 0 <= num1 <= num2 < nrows * ncols):
                raise ValueError(f"bad subplot grid {grid}")
            gs = grids.setdefault((nrows, ncols), fig.add_gridspec(nrows, ncols))
            ax = fig.add_subplot(SubplotSpec(gs, num1, num2))
        else:
            ax = fig.add_axes([float(v) for v in ax_spec["bounds"]][:4])
        for im in ax_spec["images"][:100]:
            cmap = im["cmap"] if im["cmap"] in matplotlib.colormaps else None
            vmin, vmax = (float(v) for v in im["clim"][:2])
            ax.imshow(_decode(blob_dir, im["data"]), cmap=cmap, vmin=vmin, vmax=vmax)
        for line in ax_spec["lines"][:1000]:
            ax.plot(_decode(blob_dir, line["x"]), _decode(blob_dir, line["y"]))
        for text in ax_spec["texts"][:1000]:
            ax.text(0, 0, str(text))
        ax.set_title(str(ax_spec["title"]))
        ax.set_xlabel(str(ax_spec["xlabel"]))
        ax.set_ylabel(str(ax_spec["ylabel"]))
        if not ax_spec["axison"]:
            ax.set_axis_off()
        ax.set_visible(bool(ax_spec["visible"]))
    return fig


def decode(blob_dir: str | os.PathLike, data, args: tuple = ((), {})):
    """Rebuild a value from :meth:`Encoder.encode` output (checker side, strict).

    Raises:
        Unsupported: the value cannot be compared (with a message for the student), or the
            data is malformed.
    """
    blob_dir = Path(blob_dir)
    _read_bytes[0] = 0
    try:
        if isinstance(data, dict) and data.get("t") == "keras":
            return _keras(blob_dir, data["blob"], data.get("shared"), args)
        return _decode(blob_dir, data)
    except Unsupported:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        raise Unsupported(f"malformed result ({type(exc).__name__}: {exc})") from None


def _decode(blob_dir: Path, data):
    t = data["t"]
    v = data.get("v")
    if t == "py":
        if v is not None and type(v) not in (bool, str):
            raise TypeError(f"bad py value {type(v).__name__}")
        return v
    if t == "int":
        return int(str(v)[:5000])
    if t == "float":
        return float(str(v))
    if t == "complex":
        return complex(float(v[0]), float(v[1]))
    if t == "bytes":
        return base64.b64decode(str(v))
    if t in ("list", "tuple", "set", "frozenset"):
        items = [_decode(blob_dir, x) for x in v]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[t](items)
    if t == "dict":
        return {_decode(blob_dir, k): _decode(blob_dir, x) for k, x in v}
    if t == "array":
        return _array(blob_dir, data["blob"])
    if t == "scalar":
        arr = _array(blob_dir, data["blob"])
        return arr[()] if arr.ndim == 0 else arr
    if t == "tensor":
        import tensorflow as tf

        return tf.constant(_array(blob_dir, data["blob"]))
    if t == "figure":
        return _figure(blob_dir, data)
    if t == "keras":
        return _keras(blob_dir, data["blob"])
    if t == "unsupported":
        what = data.get("what") or f"an object of type {str(data.get('type'))[:200]}"
        raise Unsupported(
            f"returned {what}, which the grader cannot compare: return numpy arrays, numbers, "
            "strings, lists, tuples, dicts, matplotlib Figures or Keras models"
        )
    raise TypeError(f"unknown type tag {t!r}")


def rebuild_exception(spec: dict) -> BaseException:
    """The exception to raise in the checker for one the student's code raised."""
    import builtins

    name, message = str(spec.get("type", "Exception"))[:100], str(spec.get("message", ""))[:2000]
    module = str(spec.get("module", ""))
    if module == "builtins" and name in _SAFE_EXCEPTIONS:
        return getattr(builtins, name)(message)
    if module == "builtins" and name in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        return SubmissionError(f"the code raised {name}({message}) (it called sys.exit or similar)")
    if module.startswith("course."):
        import importlib

        try:
            cls = getattr(importlib.import_module(module), name)
            if isinstance(cls, type) and issubclass(cls, Exception):
                return cls(message)
        except Exception:
            pass
    base_names = [b for b in spec.get("bases", []) if b in _SAFE_EXCEPTIONS]
    base = getattr(builtins, base_names[0]) if base_names else Exception
    if not name.isidentifier():
        name = "StudentException"
    return type(name, (base,), {"__module__": "submission"})(message)

