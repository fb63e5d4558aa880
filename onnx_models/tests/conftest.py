# The content store's real S3 server (moto) and its bucket fixture, shared with these tests.
from blobs.tests.conftest import moto_endpoint, s3_store  # noqa: F401
