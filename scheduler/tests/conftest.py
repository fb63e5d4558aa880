import pytest

from workflows.tests.support import Channel, approval_flow


@pytest.fixture
def setup(client_for, org, admin_user):
    client = client_for(user=admin_user)

    def blob(alias, type):
        client.post(f"/v1/orgs/{org.alias}/blobs", {"alias": alias, "type": type}, format="json")
        revision_id = client.get(f"/v1/blobs/{org.alias}/{alias}/revisions").json()["revisions"][0]["id"]
        return Channel(client, revision_id)

    flows = blob("target-flows", "blobhub.compute.workflow")
    flows.command("create_definition", alias="approve", category="workflow")
    flows.command("upload_definition", alias="approve", definition=approval_flow())
    client.post(f"/v1/revisions/{flows.revision_id}/commit", {}, format="json")
    schedules = blob("my-schedules", "blobhub.compute.scheduler")
    return client, org, schedules
