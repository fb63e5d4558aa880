import factory

from blobs.models import Blob, BlobType, Revision
from orgs.tests.factories import OrganizationFactory


class BlobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Blob
        skip_postgeneration_save = True

    org = factory.SubFactory(OrganizationFactory)
    alias = factory.Sequence(lambda n: f"blob-{n:06d}")
    type = BlobType.WORKFLOW

    @factory.post_generation
    def first_revision(blob, create, extracted, **kwargs):
        if create:
            Revision.objects.create(org=blob.org, blob=blob, number=1, comment="Initial revision")
