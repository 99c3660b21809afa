"""What a checkpoint is (manifest) and how it is committed, independent of where it is kept."""
