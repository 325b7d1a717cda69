"""Finding, downloading, verifying, reading, cleaning and splitting the cardio data."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainables import CARDIO_SHA256, DataError, DatasetConfig
from trainables.data import cardio, load_splits

HEADER = "id;age;gender;height;weight;ap_hi;ap_lo;cholesterol;gluc;smoke;alco;active;cardio"


def write(path: Path, rows: list[str], header: str = HEADER) -> str:
    path.write_text("\n".join([header, *rows]) + "\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


GOOD = "0;18393;2;168;62.0;110;80;1;1;0;0;1;0"


def test_cleaning_rules_drop_impossible_rows(tmp_path: Path) -> None:
    rows = [
        GOOD,
        "1;20000;1;160;70;16020;80;1;1;0;0;1;1",  # ap_hi far above 250
        "2;20000;1;160;70;120;-70;1;1;0;0;1;1",  # negative ap_lo
        "3;20000;1;160;70;120;130;1;1;0;0;1;1",  # ap_lo >= ap_hi
        "4;20000;1;100;70;120;80;1;1;0;0;1;1",  # height below 120
        "5;20000;1;160;250;120;80;1;1;0;0;1;1",  # weight above 200
        "6;20000;1;160;70;59;40;1;1;0;0;1;1",  # ap_hi below 60
        "7;21915;1;200;80;250;30;1;1;0;0;1;1",  # on every bound: kept
    ]
    f = tmp_path / "c.csv"
    write(f, rows)
    out = cardio.clean(cardio.read(f))
    assert list(out["id"]) == [0, 7]
    assert out["age_years"].iloc[0] == pytest.approx(18393 / 365.25)
    assert out["bmi"].iloc[0] == pytest.approx(62.0 / 1.68**2)
    assert list(out["gender"]) == [1, 0]


def test_the_real_file_is_cleaned_as_documented(real_cardio: Path) -> None:
    raw = cardio.read(real_cardio)
    assert len(raw) == 70_000
    assert raw["cardio"].value_counts().to_dict() == {0: 35_021, 1: 34_979}
    out = cardio.clean(raw)
    assert 60_000 < len(out) < 70_000
    for col, (lo, hi) in cardio.RULES.items():
        assert out[col].between(lo, hi).all()
    assert (out["ap_lo"] < out["ap_hi"]).all()


def test_split_is_stratified_and_scaled_with_train_statistics(real_cardio: Path) -> None:
    s = load_splits(DatasetConfig(name="cardio"))
    n = len(s.y_train) + len(s.y_val) + len(s.y_test)
    assert len(s.y_test) / n == pytest.approx(0.15, abs=0.002)
    assert len(s.y_val) / n == pytest.approx(0.15, abs=0.002)
    rates = [float(y.float().mean()) for y in (s.y_train, s.y_val, s.y_test)]
    assert max(rates) - min(rates) < 0.002
    assert s.x_train.dtype == s.x_val.dtype == s.x_test.dtype
    assert str(s.x_train.dtype) == "torch.float32"
    assert np.allclose(s.x_train.mean(0).numpy(), 0, atol=1e-4)
    assert np.allclose(s.x_train.std(0).numpy(), 1, atol=1e-3)
    assert not np.allclose(s.x_val.mean(0).numpy(), 0, atol=1e-4)  # not refit on val
    assert s.n_features == len(cardio.FEATURES) and s.n_classes == 2
    assert load_splits(DatasetConfig(name="cardio")) is s  # once per process


def test_lookup_order_explicit_then_env_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit, env_dir, cache = tmp_path / "x.csv", tmp_path / "env", cardio.cache_dir()
    env_dir.mkdir()
    cache.mkdir(parents=True)
    sha_e = write(explicit, [GOOD])
    sha_env = write(env_dir / "cardio_train.csv", [GOOD, GOOD])
    sha_c = write(cache / "cardio_train.csv", [GOOD, GOOD, GOOD])
    monkeypatch.setenv("SWEEPS_DATA_DIR", str(env_dir))
    assert cardio.locate(str(explicit), sha_e) == explicit
    assert cardio.locate(None, sha_env) == env_dir / "cardio_train.csv"
    monkeypatch.setenv("SWEEPS_DATA_DIR", str(tmp_path / "empty"))
    assert cardio.locate(None, sha_c) == cache / "cardio_train.csv"


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "cardio_train.csv"
    write(f, [GOOD])
    with pytest.raises(DataError, match=r"^dataset.sha256: the file .* must have SHA-256 21a705"):
        cardio.locate(str(f), CARDIO_SHA256)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "it is empty"),
        (HEADER + "\n", "has only a header"),
        ("a;b;c\n1;2;3\n", "must have the columns"),
        (
            HEADER.replace(";", ",") + "\n" + GOOD.replace(";", ",") + "\n",
            "must be ';'-separated, as Kaggle's is, but its header has commas",
        ),
        (HEADER.replace(";gluc", "") + "\n0;1;2;3;4;5;6;7;8;9;10;11\n", "lacks ['gluc']"),
        (HEADER + "\n" + GOOD.replace("168", "tall") + "\n", "column 'height' must be numeric"),
        (HEADER + "\n" + GOOD.replace("168", "") + "\n", "column 'height' must have no empty"),
        (HEADER + "\n" + GOOD[: GOOD.rindex(";")] + ";7\n", "(the label) must be 0 or 1"),
        (
            HEADER + "\n" + GOOD + "\n" + GOOD.replace(";1;1;0", ";inf;1;0") + "\n",
            "column 'cholesterol' must be finite, but row 3 of ",
        ),
        (
            HEADER + "\n" + GOOD + "\n" + GOOD.replace("168", "") + "\n",
            "column 'height' must have no empty cells, but row 3 of ",
        ),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, content: str, needle: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=None) as e:
        cardio.load_arrays(f)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_offline_error_names_where_to_put_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWEEPS_DATA_DIR", raising=False)
    with pytest.raises(DataError) as e:
        cardio.locate(None, CARDIO_SHA256, url="http://127.0.0.1:9/none")
    msg = str(e.value)
    assert "could not be downloaded" in msg
    assert str(cardio.cache_dir() / "cardio_train.csv") in msg
    assert "$SWEEPS_DATA_DIR" in msg


def test_the_offline_error_says_sweeps_data_dir_lacked_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWEEPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"not in \$SWEEPS_DATA_DIR=.*data either"):
        cardio.locate(None, CARDIO_SHA256, url="http://127.0.0.1:9/none")


def test_a_bad_mirror_url_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWEEPS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DataError, match="could not be downloaded from not-a-url"):
        cardio.locate(None, CARDIO_SHA256, url="not-a-url")


def test_an_unreadable_file_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "cardio.csv"
    write(f, [GOOD])

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(f))

    monkeypatch.setattr(Path, "open", denied)  # root reads any file: refuse it here
    with pytest.raises(DataError, match="must be readable, but permission denied"):
        cardio.locate(str(f), CARDIO_SHA256)
    monkeypatch.setattr(pd, "read_csv", denied)
    with pytest.raises(DataError, match="must be readable, but permission denied"):
        cardio.read(f)


def test_a_folder_is_not_a_data_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"must name a file, but .* is a folder"):
        cardio.locate(str(tmp_path), None)


@pytest.fixture()
def zip_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real HTTP server on loopback serving a Kaggle-style zip; at /cut it sends half of it
    under the whole one's Content-Length, at /trickle a few bytes a second."""
    csv = tmp_path / "src.csv"
    sha = write(csv, [GOOD, GOOD])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(csv, "cardio_train.csv")
    payload = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.path == "/cut":
                self.wfile.write(payload[: len(payload) // 2])
            elif self.path == "/trickle":
                for i in range(len(payload)):
                    self.wfile.write(payload[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/download", sha
    srv.shutdown()


def test_download_verifies_and_caches(
    zip_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, sha = zip_server
    monkeypatch.delenv("SWEEPS_DATA_DIR", raising=False)
    got = cardio.locate(None, sha, url=url)
    assert got == cardio.cache_dir() / "cardio_train.csv"
    assert len(pd.read_csv(got, sep=";")) == 2
    # Cached now: found without the network.
    assert cardio.locate(None, sha, url="http://127.0.0.1:9/none") == got


def test_a_download_cut_short_is_one_line_and_not_cached(
    zip_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, sha = zip_server
    monkeypatch.delenv("SWEEPS_DATA_DIR", raising=False)
    cut = url.rsplit("/", 1)[0] + "/cut"
    with pytest.raises(DataError, match=r"could not be downloaded from .*/cut \(IncompleteRead"):
        cardio.locate(None, sha, url=cut)
    assert not (cardio.cache_dir() / "cardio_train.csv").exists()


def test_a_trickling_download_shows_progress_and_gives_up_at_the_deadline(
    zip_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, sha = zip_server
    monkeypatch.delenv("SWEEPS_DATA_DIR", raising=False)
    monkeypatch.setattr(cardio, "PROGRESS_S", 0.5)
    monkeypatch.setattr(cardio, "DOWNLOAD_DEADLINE_S", 2.0)
    t0 = time.monotonic()
    with pytest.raises(DataError, match=r"\(not done after 2 s, 0.0 MB so far\); put the file"):
        cardio.locate(None, sha, url=url.rsplit("/", 1)[0] + "/trickle")
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("dataset: downloading cardio_train.csv from http://127.0.0.1:")
    assert len(err) >= 3 and all(" MB" in line for line in err[1:]), err
    assert not (cardio.cache_dir() / "cardio_train.csv").exists()


def test_a_wrong_download_names_the_url_and_a_corrupt_cache_says_to_delete_it(
    zip_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = zip_server
    monkeypatch.delenv("SWEEPS_DATA_DIR", raising=False)
    with pytest.raises(DataError) as e:
        cardio.locate(None, CARDIO_SHA256, url=url)
    assert str(e.value).startswith(f"dataset.sha256: the download from {url} must have SHA-256")
    assert "so it was not kept" in str(e.value)
    cached = cardio.cache_dir() / "cardio_train.csv"
    assert not cached.exists()
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(HEADER + "\n" + GOOD + "\n")  # a truncated copy in the cache
    with pytest.raises(DataError, match=r"\(delete it, and it is downloaded again, or set"):
        cardio.locate(None, CARDIO_SHA256, url=url)


def test_digits_split_the_same_way() -> None:
    s = load_splits(DatasetConfig(name="digits", val_fraction=0.2, test_fraction=0.2))
    assert s.n_classes == 10 and s.n_features == 64
    assert len(s.y_test) == pytest.approx(0.2 * 1797, abs=1)


def test_a_download_that_cannot_be_saved_says_where(
    zip_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cache folder that cannot be made (here a file stands in its place) is a one-line
    DataError naming the place, not a traceback."""
    url, sha = zip_server
    monkeypatch.delenv("SWEEPS_DATA_DIR", raising=False)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(DataError, match="could not be saved at") as e:
        cardio.locate(None, sha, url=url)
    assert str(cardio.cache_dir() / "cardio_train.csv") in str(e.value)
