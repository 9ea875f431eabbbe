"""spkid: speaker identification experiments."""
