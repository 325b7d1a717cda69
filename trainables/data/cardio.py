"""The Kaggle cardiovascular-disease set: find, download, verify, read and clean it.

Cleaning rules (rows outside them are physiologically impossible and are dropped):
- ap_hi (systolic) within [60, 250] mmHg and ap_lo (diastolic) within [30, 200] mmHg;
- ap_lo < ap_hi;
- height within [120, 220] cm and weight within [30, 200] kg.
Then age goes from days to years, gender from 1/2 to 0/1, and BMI = weight / (height in m)^2
is added.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import platformdirs

from trainables.errors import DataError
from trainables.files import write_atomically

if TYPE_CHECKING:  # pandas is imported where a file is read, so importing trainables is light
    import pandas as pd

FILENAME = "cardio_train.csv"
KAGGLE_URL = (
    "https://www.kaggle.com/api/v1/datasets/download/sulianova/cardiovascular-disease-dataset"
)
COLUMNS = (
    "id", "age", "gender", "height", "weight", "ap_hi", "ap_lo",
    "cholesterol", "gluc", "smoke", "alco", "active", "cardio",
)  # fmt: skip
FEATURES = (
    "age_years", "gender", "height", "weight", "bmi", "ap_hi", "ap_lo",
    "cholesterol", "gluc", "smoke", "alco", "active",
)  # fmt: skip
LABEL = "cardio"
RULES: dict[str, tuple[float, float]] = {
    "ap_hi": (60, 250),
    "ap_lo": (30, 200),
    "height": (120, 220),
    "weight": (30, 200),
}
DOWNLOAD_TIMEOUT_S = 30.0  # for one read
DOWNLOAD_DEADLINE_S = 600.0  # for the whole file (~1.5 MB zipped)
PROGRESS_S = 5.0
CHUNK_BYTES = 64 * 1024


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("sweeps"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, sha256: str | None, fix: str = "") -> Path:
    if sha256 is None:
        return path
    try:
        got = sha256_of(path)
    except OSError as exc:
        raise DataError(f"dataset: the file {path} must be readable, but {_why(exc)}") from None
    if got != sha256:
        raise DataError(
            f"dataset.sha256: the file {path} must have SHA-256 {sha256}, but got {got}; "
            "it is corrupt or not Kaggle's cardio_train.csv "
            f"({fix or 'replace it'}, or set dataset.sha256=null for a file of your own)"
        )
    return path


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _download(dest: Path, url: str, searched: str = "") -> None:
    def failed(why: str) -> DataError:
        return DataError(
            f"dataset: {FILENAME} was not found{searched} and could not be downloaded from "
            f"{url} ({why}); put the file at {dest} or in the folder named by $SWEEPS_DATA_DIR"
        )

    try:
        payload = _fetch(url)
    # ValueError: $SWEEPS_CARDIO_URL is not a URL. HTTPException: the body was cut short.
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise failed(str(exc) or type(exc).__name__) from None
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            member = next((n for n in zf.namelist() if n.endswith(FILENAME)), None)
            if member is None:
                raise DataError(f"dataset: the download from {url} holds no {FILENAME}")
            data = zf.read(member)
    except zipfile.BadZipFile:
        data = payload  # a plain CSV is fine too; the checksum decides
    try:
        write_atomically(dest, lambda f: f.write(data))  # never a half file in the cache
    except OSError as exc:
        raise DataError(
            f"dataset: the download could not be saved at {dest} ({exc}); free space there, "
            f"or put {FILENAME} in the folder named by $SWEEPS_DATA_DIR"
        ) from None


def _fetch(url: str) -> bytes:
    """The body at ``url``, with a line on stderr every ``PROGRESS_S`` and at most
    ``DOWNLOAD_DEADLINE_S`` in all (the socket timeout bounds one read, not a trickle)."""
    started = last = time.monotonic()
    chunks: list[bytes] = []
    got = 0
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
        size = int(resp.headers.get("Content-Length") or 0)
        print(f"dataset: downloading {FILENAME} from {url}", file=sys.stderr, flush=True)
        while chunk := resp.read1(CHUNK_BYTES):  # what has arrived: read() waits for it all
            chunks.append(chunk)
            got += len(chunk)
            now = time.monotonic()
            if now - started > DOWNLOAD_DEADLINE_S:
                raise TimeoutError(
                    f"not done after {DOWNLOAD_DEADLINE_S:.0f} s, {got / 1e6:.1f} MB so far"
                )
            if now - last >= PROGRESS_S:
                of = f" of {size / 1e6:.1f}" if size else ""
                print(f"dataset: {got / 1e6:.1f}{of} MB", file=sys.stderr, flush=True)
                last = now
    if size and got != size:  # urllib reads a cut-short body without Content-Length as whole
        raise http.client.IncompleteRead(b"", size - got)
    return b"".join(chunks)


def locate(path: str | None, sha256: str | None, url: str | None = None) -> Path:
    """Find the CSV: explicit path, then $SWEEPS_DATA_DIR, then the user cache, then download.

    The download comes from Kaggle, or from ``$SWEEPS_CARDIO_URL`` (a mirror) when it is set.
    """
    url = url or os.environ.get("SWEEPS_CARDIO_URL") or KAGGLE_URL
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            raise DataError(f"dataset.path: must name a file, but {str(p)!r} is a folder")
        if not p.is_file():
            raise DataError(f"dataset.path: the file must exist, but got {str(p)!r}")
        return _verify(p, sha256)
    env = os.environ.get("SWEEPS_DATA_DIR")
    searched = ""
    if env:
        p = Path(env).expanduser() / FILENAME
        if p.is_file():
            return _verify(p, sha256)
        searched = f" (not in $SWEEPS_DATA_DIR={env} either)"
    cached = cache_dir() / FILENAME
    if cached.is_file():
        return _verify(cached, sha256, "delete it, and it is downloaded again")
    _download(cached, url, searched)
    if sha256 is None:
        return cached
    got = sha256_of(cached)
    if got != sha256:
        cached.unlink(missing_ok=True)  # never keep a bad download
        raise DataError(
            f"dataset.sha256: the download from {url} must have SHA-256 {sha256}, but got {got}, "
            f"so it was not kept; it is not Kaggle's {FILENAME} (check $SWEEPS_CARDIO_URL, or "
            f"put the file at {cached} or in the folder named by $SWEEPS_DATA_DIR)"
        )
    return cached


def read(path: Path) -> pd.DataFrame:
    """Read and check the raw file: the 13 Kaggle columns, numeric, at least one row."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep=";")
    except pd.errors.EmptyDataError:
        raise DataError(
            f"dataset: the file {path} must hold a header and rows, but it is empty"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"dataset: the file {path} must be ';'-separated CSV, but {exc}") from None
    except OSError as exc:
        raise DataError(f"dataset: the file {path} must be readable, but {_why(exc)}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in COLUMNS]
    if missing or extra:
        if len(df.columns) == 1 and "," in str(df.columns[0]):
            raise DataError(
                f"dataset: the file {path} must be ';'-separated, as Kaggle's is, but its header "
                "has commas: save it with ';' between the columns"
            )
        raise DataError(
            f"dataset: the file {path} must have the columns {';'.join(COLUMNS)}, but "
            f"lacks {missing} and has unexpected {extra}"
        )
    if df.empty:
        raise DataError(f"dataset: the file {path} must hold rows, but has only a header")
    for col in COLUMNS:
        if not pd.api.types.is_numeric_dtype(df[col]):
            bad = pd.to_numeric(df[col], errors="coerce").isna()
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(
                f"dataset: column {col!r} must be numeric, but row {row + 2} of {path} holds "
                f"{df[col].iloc[row]!r}"
            )
    for col in COLUMNS:
        empty = df[col].isna().to_numpy()
        if empty.any():
            row = int(np.argmax(empty))
            raise DataError(
                f"dataset: column {col!r} must have no empty cells, but row {row + 2} of {path} "
                "has one"
            )
        endless = ~np.isfinite(df[col].to_numpy(dtype=float))  # "inf" reads as a number
        if endless.any():
            row = int(np.argmax(endless))
            raise DataError(
                f"dataset: column {col!r} must be finite, but row {row + 2} of {path} holds "
                f"{df[col].iloc[row]}"
            )
    bad_label = ~df[LABEL].isin((0, 1))
    if bad_label.any():
        row = int(np.argmax(bad_label.to_numpy()))
        raise DataError(
            f"dataset: column {LABEL!r} (the label) must be 0 or 1, but row {row + 2} of {path} "
            f"holds {df[LABEL].iloc[row]}"
        )
    return df


def clean(df: pd.DataFrame) -> pd.DataFrame:
    """Apply the documented cleaning rules and derive age_years and bmi."""
    import pandas as pd

    keep = pd.Series(True, index=df.index)
    for col, (lo, hi) in RULES.items():
        keep &= df[col].between(lo, hi)
    keep &= df["ap_lo"] < df["ap_hi"]
    out = df.loc[keep].copy()
    out["age_years"] = out["age"] / 365.25
    out["bmi"] = out["weight"] / (out["height"] / 100.0) ** 2
    out["gender"] = out["gender"] - 1  # 1/2 in the file
    return out


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the located file ``path``, cleaned."""
    raw = read(path)
    df = clean(raw)
    if df.empty:
        raise DataError(
            f"dataset: the cardio file {str(path)!r} must have rows that pass the cleaning rules "
            f"(see trainables/data/cardio.py), but all {len(raw)} fail them"
        )
    x = df[list(FEATURES)].to_numpy(dtype=np.float32)
    y = df[LABEL].to_numpy(dtype=np.int64)
    return x, y
