"""SQLite rebuilds a table to add a column (0003), and the rebuild drops its triggers.

Re-create the immutability guard of 0002 there. Any later migration that rebuilds
blobs_manifestentry or blobs_revision on SQLite must do the same (the test
test_the_database_itself_refuses_raw_sql_on_committed_content catches a miss).
"""

import importlib

from django.db import migrations

guard = importlib.import_module("blobs.migrations.0002_immutable_content")


def recreate(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    for statement in guard.DROP["sqlite"]:
        schema_editor.execute(statement)
    for statement in guard.SQLITE:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("blobs", "0003_manifest_updated_at")]
    operations = [migrations.RunPython(recreate, migrations.RunPython.noop)]
