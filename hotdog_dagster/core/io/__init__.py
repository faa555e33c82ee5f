"""Data in and out: the store layout and its atomic writer, the one decoder, batches, ingest, the catalog."""
