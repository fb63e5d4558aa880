"""The content-addressed surfaces over blobs.store (API.md §5).

`views` is the Stepflow BlobService REST at `/api/v1/blobs`, `rpc` the Skills Protocol
JSON-RPC endpoint at `/v1/rpc`. Both reach the store through `services`, scoped to the
caller's organization as `caller` resolves it, so that the same JSON gets the same id
on either surface and an org reads only what it holds.
"""
