"""The contract every :class:`~dockline.core.ports.OnlineStore` implementation passes.

Subclass :class:`OnlineStoreContract` and provide two fixtures: ``store``, a fresh, empty store
(closed after the test), and ``open_again``, a factory of further handles on the SAME underlying
store (the same file, the same server and namespace), which the tests close themselves.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from dockline.core.errors import NotFoundError, StorageError, ValidationError
from dockline.core.ports import OnlineStore, OnlineVector
from dockline.core.time import to_micros

OpenAgain = Callable[[], OnlineStore]

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
T0_US = to_micros(T0)
WRITTEN_US = T0_US + 5_000_000
BIKES = ("bikes", "docks", "ratio")


def ts(micros: Sequence[int], tz: str = "UTC") -> pa.Array:
    """A timestamp[us, tz] array."""
    return pa.array(list(micros), pa.timestamp("us", tz=tz))


def bikes_rows(entities: Sequence[str], step: int = 0) -> pa.Table:
    """One row per entity for group ``bikes``; values depend on the entity's index and ``step``."""
    n = len(entities)
    index = np.arange(n)
    return pa.table(
        {
            "station_id": pa.array(list(entities), pa.string()),
            "ts": ts((T0_US + index * 1_000_000 + step * 60_000_000).tolist()),
            "bikes": pa.array(index + step, pa.int64()),
            "docks": pa.array(30 - index - step, pa.int32()),
            "ratio": pa.array((index + step) / 30.0, pa.float64()),
        }
    )


def write_bikes(store: OnlineStore, entities: Sequence[str], step: int = 0) -> int:
    """Register (idempotently) and write group ``bikes`` for ``entities``."""
    store.register("bikes", BIKES)
    return store.write(
        "bikes", bikes_rows(entities, step), key="station_id", as_of="ts", written_at_us=WRITTEN_US
    )


def expected_bikes(i: int, step: int = 0) -> OnlineVector:
    """The vector ``bikes_rows`` wrote for the entity at index ``i``."""
    return OnlineVector(
        (i + step, 30 - i - step, (i + step) / 30.0),
        T0_US + i * 1_000_000 + step * 60_000_000,
        WRITTEN_US,
    )


class OnlineStoreContract:
    """Shared tests of the OnlineStore port (Dagster's pattern: one class, many backends)."""

    @pytest.fixture
    def store(self) -> Iterator[OnlineStore]:
        """A fresh, empty store; the subclass provides it."""
        raise NotImplementedError

    @pytest.fixture
    def open_again(self) -> OpenAgain:
        """Factory of another handle on the same underlying store; the subclass provides it."""
        raise NotImplementedError

    # -- the port itself ---------------------------------------------------------------------

    def test_implements_the_port_with_its_exact_signatures(self, store: OnlineStore) -> None:
        assert isinstance(store, OnlineStore)
        for name in ("register", "columns", "write", "read", "read_many", "close"):
            want = inspect.signature(getattr(OnlineStore, name))
            got = inspect.signature(getattr(type(store), name))
            assert list(got.parameters.values()) == list(want.parameters.values()), name
            assert got.return_annotation == want.return_annotation, name

    # -- groups ------------------------------------------------------------------------------

    def test_register_then_columns(self, store: OnlineStore) -> None:
        store.register("bikes", ["bikes", "docks"])
        store.register("weather", ("temp",))
        assert store.columns("bikes") == ("bikes", "docks")
        assert store.columns("weather") == ("temp",)

    def test_columns_of_an_unknown_group_is_not_found(self, store: OnlineStore) -> None:
        with pytest.raises(NotFoundError, match="nope"):
            store.columns("nope")
        with pytest.raises(KeyError):  # NotFoundError is also a KeyError
            store.columns("nope")

    @pytest.mark.parametrize(
        "columns", [[], "bikes", ["bikes", "bikes"], ["bikes", ""], ["bikes", 3]]
    )
    def test_register_rejects_bad_columns(self, store: OnlineStore, columns: object) -> None:
        with pytest.raises(ValidationError):
            store.register("bikes", columns)  # type: ignore[arg-type]

    def test_reregister_same_columns_keeps_vectors(self, store: OnlineStore) -> None:
        write_bikes(store, ["s1"])
        store.register("bikes", list(BIKES))
        assert store.read("s1", ["bikes"]) == {"bikes": expected_bikes(0)}

    def test_reregister_other_columns_replaces_them_and_drops_old_vectors(
        self, store: OnlineStore, open_again: OpenAgain
    ) -> None:
        write_bikes(store, ["s1", "s2"])
        store.register("weather", ["temp"])
        store.write(
            "weather",
            pa.table({"id": ["s1"], "ts": ts([T0_US]), "temp": [21.5]}),
            key="id",
            as_of="ts",
            written_at_us=WRITTEN_US,
        )
        store.register("bikes", ["docks", "bikes"])
        assert store.columns("bikes") == ("docks", "bikes")
        # Old vectors had the old layout: gone. Other groups are untouched.
        assert store.read("s1", ["bikes", "weather"]) == {
            "bikes": None,
            "weather": OnlineVector((21.5,), T0_US, WRITTEN_US),
        }
        store.write(
            "bikes", bikes_rows(["s1"]), key="station_id", as_of="ts", written_at_us=WRITTEN_US
        )
        vector = store.read("s1", ["bikes"])["bikes"]
        assert vector is not None and vector.values == (30, 0)  # (docks, bikes)
        other = open_again()
        try:
            assert other.columns("bikes") == ("docks", "bikes")
        finally:
            other.close()

    # -- write and read ----------------------------------------------------------------------

    def test_round_trip_of_every_value_type(self, store: OnlineStore) -> None:
        columns = ["i", "f", "s", "b", "nan", "t", "big", "neg", "i8", "f32", "dict", "empty", "n"]
        store.register("g", columns)
        rows = pa.table(
            {
                "id": ["a", "b"],
                "ts": ts([T0_US, T0_US + 1]),
                "i": pa.array([7, None], pa.int64()),
                "f": pa.array([0.1, None], pa.float64()),
                "s": pa.array(["héllo ✓", None], pa.string()),
                "b": pa.array([True, None], pa.bool_()),
                "nan": pa.array([math.nan, -math.inf], pa.float64()),
                "t": ts([T0_US + 123, T0_US], tz="America/Chicago"),
                "big": pa.array([2**63 - 1, 2**64 - 1], pa.uint64()),
                "neg": pa.array([-(2**63), 0], pa.int64()),
                "i8": pa.array([-5, 5], pa.int8()),
                "f32": pa.array([0.5, 1.5], pa.float32()),
                "dict": pa.array(["x", "y"]).dictionary_encode(),
                "empty": pa.array(["", "z"], pa.large_string()),
                "n": pa.array([None, None], pa.null()),
            }
        )
        assert store.write("g", rows, key="id", as_of="ts", written_at_us=WRITTEN_US) == 2
        a = store.read("a", ["g"])["g"]
        b = store.read("b", ["g"])["g"]
        assert a is not None and b is not None
        assert (a.as_of_us, a.written_at_us) == (T0_US, WRITTEN_US)
        assert b.as_of_us == T0_US + 1
        i, f, s, flag, nan, t, big, neg, i8, f32, d, empty, n = a.values
        assert (i, f, s, flag, t, big, neg, i8, f32, d, empty, n) == (
            7,
            0.1,
            "héllo ✓",
            True,
            T0_US + 123,  # timestamps become integer microseconds (UTC epoch)
            2**63 - 1,
            -(2**63),
            -5,
            0.5,
            "x",
            "",
            None,
        )
        assert isinstance(nan, float) and math.isnan(nan)
        assert type(i) is int and type(flag) is bool and type(f32) is float and type(t) is int
        assert b.values[:5] == (None, None, None, None, -math.inf)
        assert b.values[6] == 2**64 - 1

    def test_binary_values_round_trip_as_bytes(self, store: OnlineStore) -> None:
        # read-time evaluation keeps each entity's state as one binary value
        store.register("state", ["blob", "n"])
        blob = bytes(range(256)) * 40  # every byte value, 10 KiB
        rows = pa.table(
            {
                "id": ["a", "b"],
                "ts": ts([T0_US, T0_US]),
                "blob": pa.array([blob, b""], pa.binary()),
                "n": pa.array([1, 2], pa.int64()),
            }
        )
        assert store.write("state", rows, key="id", as_of="ts", written_at_us=WRITTEN_US) == 2
        found = store.read_many(["a", "b"], ["state"])
        a, b = found[0]["state"], found[1]["state"]
        assert a is not None and b is not None
        assert a.values == (blob, 1) and type(a.values[0]) is bytes
        assert b.values == (b"", 2)

    def test_timestamps_of_any_unit_are_microseconds(self, store: OnlineStore) -> None:
        store.register("g", ["t"])
        nanos = pa.array([T0_US * 1000 + 999], pa.timestamp("ns", tz="UTC"))
        seconds = pa.array([T0_US // 1_000_000], pa.timestamp("s", tz="Europe/Paris"))
        rows = pa.table({"id": ["a"], "ts": nanos, "t": seconds})
        store.write("g", rows, key="id", as_of="ts", written_at_us=np.int64(WRITTEN_US))  # type: ignore[arg-type]
        assert store.read("a", ["g"])["g"] == OnlineVector((T0_US,), T0_US, WRITTEN_US)

    def test_values_follow_registered_order_and_extra_columns_are_ignored(
        self, store: OnlineStore
    ) -> None:
        store.register("g", ["z", "a"])
        rows = pa.table({"a": [1], "extra": ["x"], "id": ["e"], "z": [2], "ts": ts([T0_US])})
        store.write("g", rows, key="id", as_of="ts", written_at_us=WRITTEN_US)
        assert store.read("e", ["g"])["g"] == OnlineVector((2, 1), T0_US, WRITTEN_US)

    def test_write_upserts_and_replaces(self, store: OnlineStore) -> None:
        write_bikes(store, ["s1", "s2"])
        write_bikes(store, ["s1"], step=5)
        assert store.read("s1", ["bikes"]) == {"bikes": expected_bikes(0, step=5)}
        assert store.read("s2", ["bikes"]) == {"bikes": expected_bikes(1)}

    def test_within_one_write_the_last_row_of_an_entity_wins(self, store: OnlineStore) -> None:
        store.register("g", ["v"])
        rows = pa.table({"id": ["a", "b", "a"], "ts": ts([1, 2, 3]), "v": [1, 2, 3]})
        assert store.write("g", rows, key="id", as_of="ts", written_at_us=9) == 3
        assert store.read("a", ["g"])["g"] == OnlineVector((3,), 3, 9)

    def test_empty_write_writes_nothing(self, store: OnlineStore) -> None:
        store.register("bikes", BIKES)
        empty = bikes_rows(["s1"]).slice(0, 0)
        assert store.write("bikes", empty, key="station_id", as_of="ts", written_at_us=1) == 0
        assert store.read("s1", ["bikes"]) == {"bikes": None}

    def test_unknown_entity_reads_all_none(self, store: OnlineStore) -> None:
        write_bikes(store, ["s1"])
        store.register("weather", ["temp"])
        assert store.read("nobody", ["bikes", "weather"]) == {"bikes": None, "weather": None}

    def test_group_not_written_for_an_entity_is_none(self, store: OnlineStore) -> None:
        write_bikes(store, ["s1"])
        store.register("weather", ["temp"])
        store.write(
            "weather",
            pa.table({"id": ["s2"], "ts": ts([T0_US]), "temp": [3.0]}),
            key="id",
            as_of="ts",
            written_at_us=WRITTEN_US,
        )
        assert store.read("s1", ["weather", "bikes"]) == {
            "weather": None,
            "bikes": expected_bikes(0),
        }
        assert list(store.read("s1", ["weather", "bikes"])) == ["weather", "bikes"]
        assert store.read("s1", []) == {}

    def test_read_many_keeps_order_duplicates_and_misses(self, store: OnlineStore) -> None:
        write_bikes(store, ["s0", "s1", "s2"])
        got = store.read_many(["s2", "missing", "s0", "s2"], ["bikes"])
        assert got == [
            {"bikes": expected_bikes(2)},
            {"bikes": None},
            {"bikes": expected_bikes(0)},
            {"bikes": expected_bikes(2)},
        ]
        got[0]["bikes"] = None  # each position is its own dict
        assert got[3] == {"bikes": expected_bikes(2)}
        assert store.read_many([], ["bikes"]) == []
        assert store.read_many(["s0", "s1"], []) == [{}, {}]

    def test_many_groups_per_entity(self, store: OnlineStore) -> None:
        groups = [f"g{k:02d}" for k in range(25)]
        for k, group in enumerate(groups):
            store.register(group, ["v", "w"])
            ids = [f"e{i}" for i in range(k % 5, 10)]  # group k skips entities below k % 5
            rows = pa.table(
                {
                    "id": ids,
                    "ts": ts([T0_US + k] * len(ids)),
                    "v": [k] * len(ids),
                    "w": [f"{group}-{i}" for i in ids],
                }
            )
            store.write(group, rows, key="id", as_of="ts", written_at_us=WRITTEN_US)
        wanted = groups[::-1]
        one = store.read("e3", wanted)
        assert list(one) == wanted
        for k, group in enumerate(groups):
            expected = (
                OnlineVector((k, f"{group}-e3"), T0_US + k, WRITTEN_US) if k % 5 <= 3 else None
            )
            assert one[group] == expected, group
        many = store.read_many(["e9", "e3", "e0"], wanted)
        assert many[1] == one
        assert all(v is not None for v in many[0].values())
        assert [k for k, v in enumerate(groups) if many[2][v] is not None] == list(range(0, 25, 5))
        # A subset of the groups returns only that subset.
        assert list(store.read_many(["e3"], ["g07", "g01"])[0]) == ["g07", "g01"]

    def test_write_and_read_ten_thousand_rows(self, store: OnlineStore) -> None:
        entities = [f"station-{i:05d}" for i in range(10_000)]
        assert write_bikes(store, entities) == 10_000
        got = store.read_many(entities, ["bikes"])
        assert len(got) == 10_000
        for i in (0, 1, 899, 900, 4321, 9999):
            assert got[i] == {"bikes": expected_bikes(i)}, i
        assert all(row["bikes"] is not None for row in got)
        assert store.read("station-07777", ["bikes"]) == {"bikes": expected_bikes(7777)}

    # -- errors ------------------------------------------------------------------------------

    def test_unknown_group_is_not_found_everywhere(self, store: OnlineStore) -> None:
        write_bikes(store, ["s1"])
        with pytest.raises(NotFoundError, match="weather"):
            store.read("s1", ["bikes", "weather"])
        with pytest.raises(NotFoundError, match="weather"):
            store.read_many(["s1"], ["weather"])
        with pytest.raises(NotFoundError, match="weather"):
            store.write(
                "weather", bikes_rows(["s1"]), key="station_id", as_of="ts", written_at_us=1
            )

    def test_missing_registered_column_is_a_validation_error_naming_it(
        self, store: OnlineStore
    ) -> None:
        store.register("bikes", [*BIKES, "capacity"])
        with pytest.raises(ValidationError, match="capacity"):
            store.write("bikes", bikes_rows(["s1"]), key="station_id", as_of="ts", written_at_us=1)
        assert store.read("s1", ["bikes"]) == {"bikes": None}  # nothing half-written

    @pytest.mark.parametrize(
        ("change", "match"),
        [
            ({"key": "nope"}, "nope"),
            ({"as_of": "nope"}, "nope"),
            ({"as_of": "bikes"}, "timestamp"),
            ({"key": "bikes"}, "string"),
            ({"written_at_us": 1.5}, "written_at_us"),
            ({"written_at_us": True}, "written_at_us"),
        ],
    )
    def test_bad_write_arguments_are_validation_errors(
        self, store: OnlineStore, change: dict[str, object], match: str
    ) -> None:
        store.register("bikes", BIKES)
        kwargs: dict[str, object] = {"key": "station_id", "as_of": "ts", "written_at_us": 1}
        kwargs.update(change)
        with pytest.raises(ValidationError, match=match):
            store.write("bikes", bikes_rows(["s1"]), **kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("column", "values", "match"),
        [
            ("station_id", pa.array(["s1", None]), "null"),
            ("ts", pa.array([T0_US, None], pa.timestamp("us", tz="UTC")), "null"),
            ("ts", pa.array([T0_US, T0_US], pa.timestamp("us")), "tz-aware"),
            ("bikes", pa.array([[1], [2]]), "bikes"),
            ("ratio", pa.array([T0.date(), T0.date() + timedelta(days=1)]), "ratio"),
        ],
    )
    def test_bad_rows_are_validation_errors(
        self, store: OnlineStore, column: str, values: object, match: str
    ) -> None:
        store.register("bikes", BIKES)
        rows = bikes_rows(["s1", "s2"])
        rows = rows.set_column(rows.schema.get_field_index(column), column, values)
        with pytest.raises(ValidationError, match=match):
            store.write("bikes", rows, key="station_id", as_of="ts", written_at_us=1)

    # -- durability and concurrency ----------------------------------------------------------

    def test_another_handle_sees_the_data(self, store: OnlineStore, open_again: OpenAgain) -> None:
        write_bikes(store, ["s1", "s2"])
        store.close()
        again = open_again()
        try:
            assert again.columns("bikes") == BIKES
            assert again.read_many(["s2", "s1"], ["bikes"]) == [
                {"bikes": expected_bikes(1)},
                {"bikes": expected_bikes(0)},
            ]
        finally:
            again.close()

    def test_a_write_by_one_handle_is_read_by_another(
        self, store: OnlineStore, open_again: OpenAgain
    ) -> None:
        write_bikes(store, ["s1"])
        reader = open_again()
        try:
            assert reader.read("s1", ["bikes"]) == {"bikes": expected_bikes(0)}
            write_bikes(store, ["s1"], step=2)
            assert reader.read("s1", ["bikes"]) == {"bikes": expected_bikes(0, step=2)}
        finally:
            reader.close()

    def test_closed_store_raises_storage_error(self, store: OnlineStore) -> None:
        write_bikes(store, ["s1"])
        store.close()
        with pytest.raises(StorageError):
            store.read("s1", ["bikes"])
        with pytest.raises(StorageError):
            store.read_many(["s1"], ["bikes"])
        with pytest.raises(StorageError):
            write_bikes(store, ["s1"])

    def test_concurrent_readers_and_a_writer_in_threads(self, store: OnlineStore) -> None:
        entities = [f"s{i}" for i in range(200)]
        write_bikes(store, entities)
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader(worker: int) -> None:
            try:
                for n in range(300):
                    i = (worker * 37 + n) % 200
                    vector = store.read(entities[i], ["bikes"])["bikes"]
                    # The writer only rewrites steps 0 and 1: either is fine, never a torn vector.
                    assert vector in (expected_bikes(i), expected_bikes(i, step=1)), vector
                    batch = store.read_many(entities[i : i + 10], ["bikes"])
                    assert len(batch) == len(entities[i : i + 10])
                    assert all(row["bikes"] is not None for row in batch)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def writer() -> None:
            try:
                step = 0
                while not stop.is_set():
                    step = 1 - step
                    store.write(
                        "bikes",
                        bikes_rows(entities, step),
                        key="station_id",
                        as_of="ts",
                        written_at_us=WRITTEN_US,
                    )
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        readers = [threading.Thread(target=reader, args=(w,)) for w in range(4)]
        writing = threading.Thread(target=writer)
        writing.start()
        for thread in readers:
            thread.start()
        for thread in readers:
            thread.join()
        stop.set()
        writing.join()
        assert not errors, errors[0]
