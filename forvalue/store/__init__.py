"""The feature store: sharded features on disk, their format, and the safety rules of reading and
writing them (atomic shards, claims, damaged manifests set aside)."""
