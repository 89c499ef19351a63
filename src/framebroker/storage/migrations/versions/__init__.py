"""One module per revision, oldest first; Alembic reads them, nothing imports them."""
