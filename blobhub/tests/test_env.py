"""Settings from the environment: generated secrets kept in the data dir."""

import os

from blobhub.env import persistent_secret


def test_two_processes_generating_one_secret_at_once_both_read_the_winner(tmp_path, monkeypatch):
    # Another process (in another container: perhaps with the same pid) generates the same
    # secret between this one's write and its link.
    path, real_link, interleaved = tmp_path / "secret-key", os.link, []

    def link_after_the_other(source, target):
        if not interleaved:
            interleaved.append(None)
            interleaved[0] = persistent_secret(path, "token")
        return real_link(source, target)

    monkeypatch.setattr(os, "link", link_after_the_other)
    mine = persistent_secret(path, "token")

    assert mine == interleaved[0] == path.read_text() != ""
    assert [item.name for item in tmp_path.iterdir()] == ["secret-key"]
