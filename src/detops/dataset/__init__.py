"""The canonical dataset: a COCO instances json whose file names are relative to the raw dataset root."""
