from django.core.management.base import BaseCommand
from django.db import transaction

from orgs import crypto
from orgs.models import Credential


class Command(BaseCommand):
    help = (
        "Re-encrypt every credential with the newest key in CREDENTIAL_KEYS. "
        "Run it after putting a new key first; then the old key can be removed."
    )

    def handle(self, *args, **options) -> None:
        count = 0
        for credential_id in Credential.objects.values_list("id", flat=True).iterator():
            with transaction.atomic():
                credential = Credential.objects.select_for_update().get(id=credential_id)
                Credential.objects.filter(id=credential.id).update(ciphertext=crypto.reencrypt(credential.ciphertext))
            count += 1
        self.stdout.write(f"Re-encrypted {count} credential(s) with the newest key.")
