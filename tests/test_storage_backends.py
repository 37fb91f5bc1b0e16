"""The two storage seams on both backends (folder + SQLite, S3 + PostgreSQL on real servers):
the same behaviour from each, so the single-node default and the scale-out setup stay equal."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from tests.conftest import Backend, assert_consistent, data_files, png_bytes, upload, wait_idle
from webapp.blobs import BlobExistsError
from webapp.cli import main
from webapp.gallery import get_gallery
from webapp.metadata import MetadataStore, alembic_config
from webapp.storage import STORE_MARKER, ImageStore, StoreOwnershipError
from webapp.store_copy import StoreCopyError, copy_store

NOT_OURS = r"has no Latent Gallery store marker matching this database"
FOREIGN = ["notes.txt", "photo.jpg", f"{'C' * 22}.sdz"]  # another program's (one named like ours)


def fill(store: ImageStore, count: int) -> list[tuple[str, str, bytes]]:
    """Add `count` images of random bytes; (id, delete key, bytes) of each, oldest first."""
    added = []
    for index in range(count):
        latent = secrets.token_bytes(100 + index)
        record, key = store.add(latent, width=8 + index, height=8, uploaded_bytes=999, method="ec")
        added.append((record.id, key, latent))
    return added


@pytest.fixture
def store(backend: Backend, tmp_path: Path) -> Iterator[ImageStore]:
    """An empty store on the backend, its schema ready."""
    store = backend.open(tmp_path / "data")
    store.prepare()
    yield store
    store.metadata.close()


def test_add_get_list_in_cursor_pages_and_delete(store):
    added = fill(store, 5)
    newest_first = [image_id for image_id, _, _ in reversed(added)]
    record = store.get(added[2][0])
    assert (record.width, record.height, record.latent_bytes) == (10, 8, 102)
    assert store.read_latent(added[2][0]) == added[2][2]

    pages, cursor = [], None
    while True:
        records, cursor = store.list_images(2, cursor)
        pages.append([r.id for r in records])
        if cursor is None:
            break
    assert pages == [newest_first[:2], newest_first[2:4], newest_first[4:]]

    image_id, key, _ = added[1]
    assert not store.delete(image_id, "wrong key")
    assert not store.delete(image_id, None)
    assert store.get(image_id) is not None
    assert store.delete(image_id, key)
    assert not store.delete(image_id, key)  # gone already
    assert store.get(image_id) is None
    with pytest.raises(FileNotFoundError):
        store.read_latent(image_id)
    assert [r.id for r in store.list_images(10)[0]] == [i for i in newest_first if i != image_id]
    with pytest.raises(ValueError, match="invalid cursor"):
        store.list_images(2, "not-a-cursor")


def test_a_blob_is_never_overwritten(store):
    store.blobs.put("first.sdz", b"first")
    with pytest.raises(BlobExistsError):
        store.blobs.put("first.sdz", b"second")
    assert store.blobs.get("first.sdz") == b"first"

    [(image_id, _, latent)] = fill(store, 1)
    with pytest.raises(BlobExistsError):
        store.add(b"other", width=1, height=1, uploaded_bytes=1, method="ec", image_id=image_id)
    assert store.read_latent(image_id) == latent
    assert [r.id for r in store.list_images(10)[0]] == [image_id]


def test_names_come_from_ids_only(store):
    for bad in ("../secret_key", "a/b", "short", "A" * 21 + "/"):
        with pytest.raises(ValueError):
            store.read_latent(bad)
        assert store.get(bad) is None
        assert not store.delete(bad, "key")


def test_repair_leaves_young_orphans_to_the_grace_period(store):
    kept, lost = fill(store, 2)
    store.blobs.delete(f"{lost[0]}.sdz")  # a row without its file
    orphan = f"{'A' * 22}.sdz"
    store.blobs.put(orphan, b"an upload between its file and its row")

    counts = store.repair(grace=3600)
    assert counts == {"temp_files": 0, "orphan_files": 0, "orphan_rows": 1, "young_kept": 1}
    assert store.blobs.get(orphan)  # a peer's upload in flight is not touched
    assert store.get(lost[0]) is None

    counts = store.repair(grace=0)
    assert counts == {"temp_files": 0, "orphan_files": 1, "orphan_rows": 0, "young_kept": 0}
    assert sorted(name for name, _ in store.blob_names()) == [f"{kept[0]}.sdz"]
    assert store.read_latent(kept[0]) == kept[2]
    assert store.blobs.get(STORE_MARKER) == store.store_id().encode()  # never an orphan


def test_a_display_latent_lives_and_dies_with_its_image(store):
    [(kept, _, _)] = fill(store, 1)
    record, key = store.add(
        b"full latent", width=2048, height=1152, uploaded_bytes=9, method="ec", display=b"small"
    )
    assert (record.display_bytes, record.stored_bytes) == (5, 16)
    assert store.get(record.id) == record
    assert store.read_latent(record.id, display=True) == b"small"
    assert store.read_latent(record.id) == b"full latent"
    orphan = f"{'C' * 22}.display.sdz"
    store.blobs.put(orphan, b"a display latent whose image is gone")
    counts = store.repair(grace=0)
    assert counts == {"temp_files": 0, "orphan_files": 1, "orphan_rows": 0, "young_kept": 0}
    names = {f"{kept}.sdz", f"{record.id}.sdz", f"{record.id}.display.sdz"}
    assert {name for name, _ in store.blob_names()} == names
    assert store.delete(record.id, key)
    assert {name for name, _ in store.blob_names()} == {f"{kept}.sdz"}


def test_a_failed_row_takes_back_both_files(store, monkeypatch):
    """The files go first, then the row: both files are stored when the row is inserted, and
    taken back when it fails."""
    image_id = "E" * 22
    stored_before_the_row = {}

    def refuse(rows):
        stored_before_the_row.update((n, store.blobs.get(n)) for n, _ in store.blob_names())
        raise RuntimeError("the database went away")

    monkeypatch.setattr(store.metadata, "insert", refuse)
    with pytest.raises(RuntimeError, match="went away"):
        store.add(
            b"full",
            width=2048,
            height=1152,
            uploaded_bytes=9,
            method="ec",
            display=b"d",
            image_id=image_id,
        )
    assert stored_before_the_row == {f"{image_id}.sdz": b"full", f"{image_id}.display.sdz": b"d"}
    assert list(store.blob_names()) == []


def test_copy_store_copies_and_verifies_display_latents(tmp_path):
    local = Backend("folder+sqlite")
    source, target = local.open(tmp_path / "a"), local.open(tmp_path / "b")
    source.prepare()
    record, _ = source.add(
        b"full", width=2048, height=1152, uploaded_bytes=9, method="ec", display=b"small"
    )
    assert copy_store(source, target).images == 1
    assert target.read_latent(record.id, display=True) == b"small"
    assert target.get(record.id).display_bytes == 5
    other = local.open(tmp_path / "c")
    other.prepare()
    other.blobs.put(f"{record.id}.display.sdz", b"other")  # the same name, different bytes
    with pytest.raises(StoreCopyError, match="differs"):
        copy_store(source, other)
    for opened in (source, target, other):
        opened.metadata.close()


def other_database(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a second database on the backend, migrated."""
    if backend.name == "folder+sqlite":
        return f"sqlite:///{tmp_path / 'other' / 'gallery.sqlite3'}"
    url = request.getfixturevalue("postgres").create_database(f"e{secrets.token_hex(8)}")
    metadata = MetadataStore(url)
    metadata.upgrade()
    metadata.close()
    return url


def test_repair_refuses_another_programs_files_and_deletes_nothing(backend, tmp_path):
    store = backend.open(tmp_path / "data")
    for name in FOREIGN:
        store.blobs.put(name, b"not a latent of ours")
    store.prepare()  # a new database: a folder or prefix holding files is not marked
    with pytest.raises(StoreOwnershipError, match=rf"^refusing to repair: .*{NOT_OURS} \(it has"):
        store.repair(grace=0)
    assert sorted(name for name, _ in store.blobs.names()) == sorted(FOREIGN)
    store.metadata.close()


def test_repair_refuses_another_databases_store(backend, tmp_path, request):
    gallery = backend.open(tmp_path / "data")
    gallery.prepare()
    latents = {f"{image_id}.sdz" for image_id, _, _ in fill(gallery, 2)}
    other = ImageStore.open(
        tmp_path / "data", other_database(backend, tmp_path, request), backend.storage
    )
    other.prepare()  # the marker there is the gallery's: left alone
    with pytest.raises(StoreOwnershipError, match=rf"{NOT_OURS} \(its marker is another"):
        other.repair(grace=0)
    assert {name for name, _ in gallery.blob_names()} == latents
    assert gallery.blobs.get(STORE_MARKER) == gallery.store_id().encode() != other.store_id()
    for opened in (gallery, other):
        opened.metadata.close()


def test_a_store_from_before_markers_is_marked_by_its_latents(backend, tmp_path):
    store = backend.open(tmp_path / "data")
    store.metadata.upgrade()  # as `latent-gallery db upgrade` leaves it: no marker, no store id
    [(image_id, _, _)] = fill(store, 1)
    store.blobs.put(f"{'D' * 22}.sdz", b"an orphan")
    with pytest.raises(StoreOwnershipError):
        store.repair(grace=0)
    store.prepare()
    assert store.blobs.get(STORE_MARKER) == store.store_id().encode()
    assert store.repair(grace=0)["orphan_files"] == 1
    assert {name for name, _ in store.blob_names()} == {f"{image_id}.sdz"}
    store.metadata.close()


def test_the_secret_key_is_created_once_and_shared(backend, tmp_path):
    first, second = backend.open(tmp_path / "data"), backend.open(tmp_path / "data")
    first.prepare()
    key = first.secret_key()
    assert len(key) >= 32
    assert second.secret_key() == key == first.secret_key()


def test_migrations_upgrade_once_and_are_required(backend, tmp_path, request):
    if backend.name == "s3+postgresql":  # an empty database, not the fixture's migrated one
        fresh = request.getfixturevalue("postgres").create_database(f"e{secrets.token_hex(8)}")
        backend = Backend(backend.name, fresh, backend.storage)
    store = backend.open(tmp_path / "data")
    assert store.metadata.revision() is None
    if backend.name == "folder+sqlite":
        store.prepare()  # a SQLite data folder upgrades itself
    else:
        with pytest.raises(RuntimeError, match="latent-gallery db upgrade"):
            store.prepare()
        store.metadata.upgrade()
    head = store.metadata.revision()
    assert head is not None
    store.metadata.upgrade()
    assert store.metadata.revision() == head
    store.prepare()
    store.metadata.require_current()


def test_rows_from_before_source_sizes_upgrade_and_read_as_stored(backend, tmp_path, request):
    """A database at 0001 with an image: 0002 adds the upload's size, NULL for it, so its
    source size is its stored size."""
    if backend.name == "s3+postgresql":
        fresh = request.getfixturevalue("postgres").create_database(f"e{secrets.token_hex(8)}")
        backend = Backend(backend.name, fresh, backend.storage)
    store = backend.open(tmp_path / "data")
    with store.metadata.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            sa.text(
                "INSERT INTO images (id, width, height, uploaded_bytes, latent_bytes, created_at,"
                " method, delete_key_hash) VALUES ('A' || :tail, 64, 48, 9, 5, 1.0, 'ec', :key)"
            ),
            {"tail": "A" * 21, "key": b"hash"},
        )
    store.metadata.upgrade()
    record = store.get("A" * 22)
    assert record is not None and record.source_size == record.size == (64, 48)
    store.metadata.close()


def test_nodes_upgrading_at_once_take_turns(backend, tmp_path, request):
    if backend.name == "s3+postgresql":  # without turns they would wait on each other: give up
        fresh = request.getfixturevalue("postgres").create_database(f"e{secrets.token_hex(8)}")
        backend = Backend(backend.name, f"{fresh}?options=-c%20lock_timeout%3D30s", backend.storage)
    stores = [backend.open(tmp_path / "data") for _ in range(4)]
    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(lambda store: store.metadata.upgrade(), stores))
    for store in stores:
        store.metadata.require_current()
        store.metadata.close()


def test_an_unmigrated_postgres_stops_the_app_naming_the_command(postgres, make_app):
    database = postgres.create_database(f"e{secrets.token_hex(8)}")
    with pytest.raises(RuntimeError, match="latent-gallery db upgrade"):
        make_app(database_url=database)


def test_the_app_serves_uploads_from_the_backend(backend, make_app):
    app = make_app(**backend.config())
    client = app.test_client()
    image = upload(client, png_bytes(seed=4))
    wait_idle(app)
    store: ImageStore = get_gallery(app).store
    listed = client.get("/api/images").get_json()["images"]
    assert [entry["id"] for entry in listed] == [image["id"]]
    latent = client.get(f"/i/{image['id']}.sdz")
    assert latent.status_code == 200 and latent.data == store.read_latent(image["id"])
    assert assert_consistent(get_gallery(app).settings.data, backend.database, backend.storage) == {
        image["id"]
    }
    if backend.name == "s3+postgresql":
        assert data_files(app) == []  # nothing of the gallery on the node's disk

    response = client.delete(
        f"/api/images/{image['id']}", headers={"X-Delete-Key": image["delete_key"]}
    )
    assert response.status_code == 204
    assert client.get(f"/api/images/{image['id']}").status_code == 404
    assert client.get(f"/i/{image['id']}.sdz").status_code == 404
    assert (
        assert_consistent(get_gallery(app).settings.data, backend.database, backend.storage)
        == set()
    )


def use(monkeypatch: pytest.MonkeyPatch, data: Path, backend: Backend) -> None:
    """Point the settings (as the command line reads them) at `data` on `backend`."""
    monkeypatch.setenv("LATENT_GALLERY_DATA", str(data))
    for name, value in backend.env().items():
        monkeypatch.setenv(name, value)


def test_db_upgrade_and_repair_commands(backend, tmp_path, monkeypatch, capsys):
    use(monkeypatch, tmp_path / "data", backend)
    assert main(["db", "upgrade"]) == 0
    before = "0003" if backend.name == "s3+postgresql" else "empty"  # the fixture migrated it
    assert f"{before} -> 0003" in capsys.readouterr().out
    store = backend.open(tmp_path / "data")
    [(image_id, _, _)] = fill(store, 1)
    store.blobs.put(f"{'B' * 22}.sdz", b"orphan")

    assert main(["repair"]) == 0
    assert "orphan files: 0" in capsys.readouterr().out
    assert main(["repair", "--grace", "0"]) == 0
    assert "orphan files: 1" in capsys.readouterr().out
    assert {name for name, _ in store.blob_names()} == {f"{image_id}.sdz"}
    with pytest.raises(SystemExit) as usage_error:
        main(["repair", "--grace", "-1"])
    assert usage_error.value.code == 2
    store.metadata.close()


def test_repair_of_a_mistyped_storage_url_exits_1_with_one_line(backend, tmp_path, monkeypatch):
    gallery = backend.open(tmp_path / "data")
    gallery.prepare()
    ids = {image_id for image_id, _, _ in fill(gallery, 2)}
    elsewhere = f"{backend.storage}-elsewhere" if backend.storage else str(tmp_path / "elsewhere")
    use(monkeypatch, tmp_path / "data", dataclasses.replace(backend, storage=elsewhere))
    command = [sys.executable, "-m", "webapp.cli", "repair", "--grace", "0"]
    repair = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert repair.returncode == 1, repair.stdout
    assert repair.stderr.startswith(f"latent-gallery: error: refusing to repair: {elsewhere}")
    assert NOT_OURS in repair.stderr and repair.stderr.count("\n") == 1
    assert gallery.metadata.ids() == ids  # an empty folder or prefix: no row lost
    gallery.metadata.close()


def test_a_command_on_an_unreachable_database_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENT_GALLERY_DATA", str(tmp_path))
    monkeypatch.setenv("LATENT_GALLERY_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("latent-gallery: error:") and err.count("\n") == 1


def test_copy_store_there_and_back_resumes_and_verifies(
    shared_backend, tmp_path, monkeypatch, capsys
):
    local = Backend("folder+sqlite")
    use(monkeypatch, tmp_path / "data", local)
    source = local.open(tmp_path / "data")
    source.prepare()
    added = fill(source, 6)
    secret = source.secret_key()
    to_shared = ["copy-store", "--to-storage", shared_backend.storage,
                 "--to-database", shared_backend.database, "--workers", "3"]  # fmt: skip

    assert main(to_shared) == 0
    assert capsys.readouterr().out.startswith("6 images copied and verified: 6 files copied")
    target = shared_backend.open(tmp_path / "unused")
    assert [r.id for r in target.list_images(10)[0]] == [i for i, _, _ in reversed(added)]
    assert all(target.read_latent(i) == latent for i, _, latent in added)
    assert target.secret_key() == secret
    assert sum(target.repair(grace=0).values()) == 0  # the copy marked it: nothing to do

    # Resume: a run that stopped half-way (two images absent) finishes; nothing is copied twice.
    for image_id, key, _ in added[4:]:
        assert target.delete(image_id, key)
    assert main(to_shared) == 0
    out = capsys.readouterr().out
    assert "2 files copied, 4 already there; 2 rows copied, 4 already there" in out
    assert main(to_shared) == 0
    assert (
        "0 files copied, 6 already there; 0 rows copied, 6 already there" in capsys.readouterr().out
    )

    # A missing source file stops the run unless --skip-missing.
    source.blobs.delete(f"{added[0][0]}.sdz")
    assert main(to_shared) == 1
    assert "no latent file" in capsys.readouterr().err
    assert main([*to_shared, "--skip-missing"]) == 0
    assert "5 images copied and verified" in capsys.readouterr().out

    # And back, into a new data folder: S3 -> folder, PostgreSQL -> SQLite.
    back = tmp_path / "back"
    assert main(["copy-store", "--from-storage", shared_backend.storage,
                 "--from-database", shared_backend.database,
                 "--to-storage", str(back / "latents"),
                 "--to-database", f"sqlite:///{back / 'gallery.sqlite3'}"]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("6 images copied and verified: 6 files copied")
    returned = local.open(back)
    assert [r.id for r in returned.list_images(10)[0]] == [i for i, _, _ in reversed(added)]
    assert all(returned.read_latent(i) == latent for i, _, latent in added)
    assert sum(returned.repair(grace=0).values()) == 0
    assert assert_consistent(back) == {i for i, _, _ in added}
    for opened in (source, target, returned):
        opened.metadata.close()


def test_copy_store_refuses_a_different_file_under_the_same_name(
    shared_backend, tmp_path, monkeypatch, capsys
):
    local = Backend("folder+sqlite")
    use(monkeypatch, tmp_path / "data", local)
    source = local.open(tmp_path / "data")
    source.prepare()
    [(image_id, _, _)] = fill(source, 1)
    target = shared_backend.open(tmp_path / "unused")
    target.blobs.put(f"{image_id}.sdz", b"something else")
    assert main(["copy-store", "--to-storage", shared_backend.storage]) == 1
    assert "differs" in capsys.readouterr().err
    assert main(["copy-store"]) == 1
    assert "the same store" in capsys.readouterr().err
    source.metadata.close()
    target.metadata.close()


@pytest.mark.parametrize(
    ("database", "storage", "variable"),
    [
        ("mysql://db/x", "", "LATENT_GALLERY_DATABASE_URL"),
        ("not a url", "", "LATENT_GALLERY_DATABASE_URL"),
        ("", "ftp://host/folder", "LATENT_GALLERY_STORAGE_URL"),
        ("", "s3:///no-bucket", "LATENT_GALLERY_STORAGE_URL"),
    ],
)
def test_a_bad_url_is_an_error_naming_its_variable(tmp_path, database, storage, variable):
    with pytest.raises(ValueError, match=variable):
        ImageStore.open(tmp_path, database, storage)
