"""`latent-gallery`: the codec's commands (`codec.cli`) and the gallery's storage commands.

    latent-gallery db upgrade          run the schema migrations (SQLite or PostgreSQL)
    latent-gallery repair [--grace S]  remove orphans older than S seconds (default 3600)
    latent-gallery copy-store --from-storage A --to-storage B (and/or --from/to-database)

The stores come from the settings (`LATENT_GALLERY_DATA`, `_DATABASE_URL`, `_STORAGE_URL`).
Exit status as the codec's: 0, 2 on a usage error, 1 on any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.exc import SQLAlchemyError

from codec import cli as codec_cli

from .settings import Settings
from .storage import REPAIR_GRACE_S, ImageStore

ERRORS = (SQLAlchemyError, BotoCoreError, ClientError, RuntimeError)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `db upgrade`, `repair` and `copy-store` to the codec's subcommands."""
    db = commands.add_parser("db", help="the metadata database's schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser(
        "upgrade", help="run the migrations up to the newest (LATENT_GALLERY_DATABASE_URL)"
    )
    upgrade.set_defaults(run=run_db_upgrade)

    repair = commands.add_parser(
        "repair", help="remove files without a row (older than the grace) and rows without a file"
    )
    repair.add_argument(
        "--grace",
        type=_seconds,
        default=REPAIR_GRACE_S,
        metavar="SECONDS",
        help="never remove a file younger than this (an upload in flight); default 3600",
    )
    repair.set_defaults(run=run_repair)

    copy = commands.add_parser(
        "copy-store",
        help="copy the images to another blob store and/or database (resumable, verified)",
        description="Each --from-* defaults to the configured URL, each --to-* to its --from-*.",
    )
    copy.add_argument("--from-storage", metavar="URL", help="a folder or s3://bucket/prefix")
    copy.add_argument("--to-storage", metavar="URL")
    copy.add_argument("--from-database", metavar="URL", help="sqlite:///... or postgresql://")
    copy.add_argument("--to-database", metavar="URL")
    copy.add_argument("--workers", type=_positive, default=8, help="parallel copies (8)")
    copy.add_argument(
        "--skip-missing", action="store_true", help="leave out rows whose file is gone"
    )
    copy.set_defaults(run=run_copy_store)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `latent-gallery` console script."""
    return codec_cli.main(argv, extend=add_commands, errors=ERRORS)


def run_db_upgrade(_args: argparse.Namespace) -> None:
    """Migrate the configured database to the newest schema."""
    store = _configured_store()
    before = store.metadata.revision()
    store.metadata.upgrade()
    print(f"database schema: {before or 'empty'} -> {store.metadata.revision()}")


def run_repair(args: argparse.Namespace) -> None:
    """Repair the configured store; print the counts."""
    store = _configured_store()
    store.prepare()
    counts = store.repair(args.grace)
    print(", ".join(f"{name.replace('_', ' ')}: {count}" for name, count in counts.items()))


def run_copy_store(args: argparse.Namespace) -> None:
    """Copy the images from one store to another and verify them."""
    from .store_copy import copy_store

    settings = Settings.from_env()
    source = ImageStore.open(
        settings.data,
        args.from_database or settings.database_url,
        args.from_storage or settings.storage_url,
    )
    target = ImageStore.open(
        settings.data,
        args.to_database or args.from_database or settings.database_url,
        args.to_storage or args.from_storage or settings.storage_url,
    )
    source.prepare()
    report = copy_store(source, target, workers=args.workers, skip_missing=args.skip_missing)
    print(report.summary())


def _configured_store() -> ImageStore:
    settings = Settings.from_env()
    return ImageStore.open(settings.data, settings.database_url, settings.storage_url)


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


if __name__ == "__main__":
    sys.exit(main())
