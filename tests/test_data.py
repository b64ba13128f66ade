"""course.data: finding, checking and downloading MNIST (with a real loopback HTTP server)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from course import _paths, data
from course.errors import DatasetError

REAL_FILE = _paths.PROJECT_ROOT / "datasets" / "mnist.npz"


@pytest.fixture
def no_local_copy(tmp_path, monkeypatch):
    """Hide every local copy: not a checkout (an empty project folder), an empty current
    directory, no data folder, an empty keras home."""
    monkeypatch.setattr(_paths, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path/served`` on 127.0.0.1 at a free port; yields (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_npz(path: Path, **overrides) -> Path:
    """An npz in keras' layout with zero arrays of the right shapes, overridden as given."""
    arrays = {key: np.zeros(shape, np.uint8) for key, (shape, _) in data.EXPECTED.items()}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_loads_real_mnist_scaled_with_channel_axis(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 == x_train.min() and x_train.max() == 1.0
    assert y_train.shape == (60000,) and np.issubdtype(y_train.dtype, np.integer)
    assert list(y_test[:5]) == [7, 2, 1, 0, 4]
    assert np.bincount(y_train).tolist()[:3] == [5923, 6742, 5958]


def test_explicit_folder_and_data_dir_are_used(tmp_path, monkeypatch):
    shutil.copy(REAL_FILE, tmp_path / "mnist.npz")
    assert data.locate(tmp_path) == tmp_path / "mnist.npz"
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert data.locate() == tmp_path / "mnist.npz"


def test_explicit_missing_path_names_it(tmp_path):
    with pytest.raises(DatasetError, match="no MNIST file at .*nowhere.npz"):
        data.load_mnist(tmp_path / "nowhere.npz")


def test_truncated_file_is_reported_with_the_fix(tmp_path):
    truncated = tmp_path / "mnist.npz"
    truncated.write_bytes(REAL_FILE.read_bytes()[:100_000])
    with pytest.raises(DatasetError) as error:
        data.load_mnist(truncated)
    message = str(error.value)
    assert str(truncated) in message and "truncated" in message and "Delete it" in message


def test_wrong_content_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="x_train.*not MNIST's content"):
        data.load_mnist(write_npz(tmp_path / "zeros.npz"))


def test_wrong_shape_is_refused(tmp_path):
    small = write_npz(tmp_path / "small.npz", x_train=np.zeros((100, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match=r"'x_train' is uint8 of shape \(100, 28, 28\), expected"):
        data.load_mnist(small)


def test_missing_arrays_are_named(tmp_path):
    partial = write_npz(tmp_path / "partial.npz", y_test=None)
    with pytest.raises(DatasetError, match=r"missing \['y_test'\]"):
        data.load_mnist(partial)


def test_offline_and_missing_says_where_it_looked(no_local_copy, monkeypatch):
    monkeypatch.setenv("COURSE_MNIST_URL", "http://127.0.0.1:9/mnist.npz")  # discard port: refused
    with pytest.raises(DatasetError) as error:
        data.load_mnist()
    message = str(error.value)
    assert "downloading it from http://127.0.0.1:9/mnist.npz failed" in message
    assert "copy mnist.npz into" in message


def test_download_from_loopback_server(no_local_copy, http_server, monkeypatch):
    folder, url = http_server
    shutil.copy(REAL_FILE, folder / "mnist.npz")
    monkeypatch.setenv("COURSE_MNIST_URL", f"{url}/mnist.npz")
    (x_train, _), _ = data.load_mnist()
    assert x_train.shape == (60000, 28, 28, 1)
    cached = no_local_copy / "keras_home" / "datasets" / "mnist.npz"
    assert cached.is_file()
    assert data.locate() == cached  # the next load finds keras' cache, no download


def test_corrupt_download_is_refused_and_kept_aside(no_local_copy, http_server, monkeypatch):
    folder, url = http_server
    write_npz(folder / "mnist.npz")
    monkeypatch.setenv("COURSE_MNIST_URL", f"{url}/mnist.npz")
    with pytest.raises(DatasetError, match="is not MNIST; it was kept as mnist.npz.corrupt"):
        data.load_mnist()
    cache = no_local_copy / "keras_home" / "datasets"
    assert (cache / "mnist.npz.corrupt").is_file() and not (cache / "mnist.npz").exists()


def test_outside_a_checkout_the_message_names_a_folder_that_is_searched(no_local_copy, monkeypatch):
    """Installed (not a checkout), the fix the message gives must work: the folder it names is searched."""
    assert _paths.checkout_root() is None
    with pytest.raises(DatasetError) as error:
        data.locate(allow_download=False)
    message = str(error.value)
    named = Path(message.split("Copy mnist.npz into ")[1].rstrip("."))
    assert named == no_local_copy / "datasets"
    named.mkdir()
    shutil.copy(REAL_FILE, named / "mnist.npz")
    assert data.locate(allow_download=False) == named / "mnist.npz"


def test_keras_home_is_honoured_by_the_package_and_the_grader(tmp_path, monkeypatch):
    from grader import engine

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    (tmp_path / "kh" / "datasets").mkdir(parents=True)
    assert data.keras_cache_file() == tmp_path / "kh" / "datasets" / "mnist.npz"
    assert str(tmp_path / "kh" / "datasets") in engine.read_paths()
    monkeypatch.delenv("KERAS_HOME")
    assert _paths.keras_datasets_dir() == Path.home() / ".keras" / "datasets"


def test_scaling_is_exactly_dividing_by_255(mnist):
    raw = data.read_arrays(data.locate())
    (x_train, _), (x_test, _) = mnist
    assert np.array_equal(x_train[..., 0], raw["x_train"].astype(np.float32) / 255.0)
    assert np.array_equal(x_test[..., 0], raw["x_test"].astype(np.float32) / 255.0)


def test_preload_serves_the_same_unchanged_file_without_reading_it_again(tmp_path, monkeypatch):
    file = tmp_path / "mnist.npz"
    shutil.copy(REAL_FILE, file)
    monkeypatch.setattr(data, "_PRELOADED", {})
    assert data.preload(file) == file
    expected = data.load_mnist(file)

    def no_reading(*args, **kwargs):
        raise AssertionError("the preloaded file was read again")

    monkeypatch.setattr(np, "load", no_reading)
    (x_train, y_train), (x_test, y_test) = data.load_mnist(file)
    assert np.array_equal(x_train, expected[0][0]) and np.array_equal(y_test, expected[1][1])
    x_train[0] = 5.0  # what load_mnist returns is the caller's own; the kept arrays are read-only
    assert data.load_mnist(file)[0][0][0].max() <= 1.0
    assert not data.read_arrays(file)["x_train"].flags.writeable
    monkeypatch.undo()

    monkeypatch.setattr(data, "_PRELOADED", data._PRELOADED)
    write_npz(file)  # another file at the same path: read again
    with pytest.raises(DatasetError, match="not MNIST's content"):
        data.load_mnist(file)


def test_preload_never_downloads(no_local_copy, monkeypatch):
    monkeypatch.setattr(data, "download", lambda *a, **k: pytest.fail("preload downloaded"))
    with pytest.raises(DatasetError, match="downloads are off"):
        data.preload()
