"""What the scheduler's tests share: a schedule's target and the commands they send."""


def target(org, **extra):
    return {
        "target": {"org": org.alias, "blob": "target-flows", "revision": "default", **extra},
        "workflow": {"definition": "approve"},
        "input_data": [{"alias": "order", "value": {"type": "json", "json": {"items": [{"price": 5}]}}}],
    }


def create(channel, org, **fields):
    answer = channel.command("create_schedule", invocation_target=target(org), **fields)
    assert answer.status_code == 200, answer.json()
    return answer.json()["schedule"]


def commit(client, channel):
    operation = client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json").json()["operation_id"]
    assert client.get(f"/v1/operations/{operation}").json()["operation"]["status"] == "completed"
