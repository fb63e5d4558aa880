"""The database's own guard: committed and snapshot content never changes (DESIGN §3)."""

from django.db import migrations

POSTGRES = [
    """
    CREATE OR REPLACE FUNCTION blobs_refuse_frozen_manifest() RETURNS trigger AS $$
    BEGIN
        IF TG_OP IN ('INSERT', 'UPDATE') AND EXISTS (
            SELECT 1 FROM blobs_revision WHERE id = NEW.revision_id AND phase <> 'draft'
        ) THEN
            RAISE EXCEPTION 'revision content is immutable' USING ERRCODE = 'check_violation';
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') AND EXISTS (
            SELECT 1 FROM blobs_revision r JOIN blobs_blob b ON b.id = r.blob_id
            WHERE r.id = OLD.revision_id AND r.phase <> 'draft' AND b.status <> 'deleting'
        ) THEN
            RAISE EXCEPTION 'revision content is immutable' USING ERRCODE = 'check_violation';
        END IF;
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER blobs_manifest_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON blobs_manifestentry
    FOR EACH ROW EXECUTE FUNCTION blobs_refuse_frozen_manifest()
    """,
    """
    CREATE OR REPLACE FUNCTION blobs_refuse_thawing_revision() RETURNS trigger AS $$
    BEGIN
        IF OLD.phase <> 'draft' AND (NEW.phase = 'draft' OR NEW.tree_hash <> OLD.tree_hash) THEN
            RAISE EXCEPTION 'a committed revision stays committed' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER blobs_revision_frozen
    BEFORE UPDATE ON blobs_revision
    FOR EACH ROW EXECUTE FUNCTION blobs_refuse_thawing_revision()
    """,
]

SQLITE = [
    """
    CREATE TRIGGER blobs_manifest_immutable_insert BEFORE INSERT ON blobs_manifestentry
    WHEN EXISTS (SELECT 1 FROM blobs_revision WHERE id = NEW.revision_id AND phase <> 'draft')
    BEGIN SELECT RAISE(ABORT, 'revision content is immutable'); END
    """,
    """
    CREATE TRIGGER blobs_manifest_immutable_update BEFORE UPDATE ON blobs_manifestentry
    WHEN EXISTS (SELECT 1 FROM blobs_revision WHERE id IN (OLD.revision_id, NEW.revision_id) AND phase <> 'draft')
    BEGIN SELECT RAISE(ABORT, 'revision content is immutable'); END
    """,
    """
    CREATE TRIGGER blobs_manifest_immutable_delete BEFORE DELETE ON blobs_manifestentry
    WHEN EXISTS (
        SELECT 1 FROM blobs_revision r JOIN blobs_blob b ON b.id = r.blob_id
        WHERE r.id = OLD.revision_id AND r.phase <> 'draft' AND b.status <> 'deleting'
    )
    BEGIN SELECT RAISE(ABORT, 'revision content is immutable'); END
    """,
    """
    CREATE TRIGGER blobs_revision_frozen BEFORE UPDATE ON blobs_revision
    WHEN OLD.phase <> 'draft' AND (NEW.phase = 'draft' OR NEW.tree_hash <> OLD.tree_hash)
    BEGIN SELECT RAISE(ABORT, 'a committed revision stays committed'); END
    """,
]

DROP = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS blobs_manifest_immutable ON blobs_manifestentry",
        "DROP TRIGGER IF EXISTS blobs_revision_frozen ON blobs_revision",
        "DROP FUNCTION IF EXISTS blobs_refuse_frozen_manifest()",
        "DROP FUNCTION IF EXISTS blobs_refuse_thawing_revision()",
    ],
    "sqlite": [
        "DROP TRIGGER IF EXISTS blobs_manifest_immutable_insert",
        "DROP TRIGGER IF EXISTS blobs_manifest_immutable_update",
        "DROP TRIGGER IF EXISTS blobs_manifest_immutable_delete",
        "DROP TRIGGER IF EXISTS blobs_revision_frozen",
    ],
}


def create(apps, schema_editor) -> None:
    statements = {"postgresql": POSTGRES, "sqlite": SQLITE}.get(schema_editor.connection.vendor, [])
    for statement in statements:
        schema_editor.execute(statement)


def drop(apps, schema_editor) -> None:
    for statement in DROP.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("blobs", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
